// Stand-in for the Metal declarations metal/*.mm use (tests/objc_stubs/README.md).
#pragma once
#import <Foundation/Foundation.h>
typedef struct { NSUInteger width, height, depth; } MTLSize;
static inline MTLSize MTLSizeMake(NSUInteger w, NSUInteger h, NSUInteger d) { MTLSize s = {w, h, d}; return s; }
@protocol MTLFunction
@end
@protocol MTLBuffer
@end
@protocol MTLComputePipelineState
@property(readonly) NSUInteger maxTotalThreadsPerThreadgroup;
@end
@protocol MTLLibrary
- (id<MTLFunction>)newFunctionWithName:(NSString *)name;
@end
@protocol MTLDevice
- (id<MTLComputePipelineState>)newComputePipelineStateWithFunction:(id<MTLFunction>)f error:(NSError **)e;
@end
@protocol MTLComputeCommandEncoder
- (void)setComputePipelineState:(id<MTLComputePipelineState>)p;
- (void)setBuffer:(id<MTLBuffer>)b offset:(NSUInteger)o atIndex:(NSUInteger)i;
- (void)setBytes:(const void *)p length:(NSUInteger)l atIndex:(NSUInteger)i;
- (void)dispatchThreads:(MTLSize)t threadsPerThreadgroup:(MTLSize)g;
- (void)dispatchThreadgroups:(MTLSize)t threadsPerThreadgroup:(MTLSize)g;
@end
