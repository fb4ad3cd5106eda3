// Stand-in for the Foundation declarations metal/*.mm use (tests/objc_stubs/README.md).
#pragma once
typedef unsigned long NSUInteger;
#define nil nullptr
typedef signed char BOOL;
@interface NSObject
@end
@interface NSString : NSObject
+ (NSString *)stringWithUTF8String:(const char *)s;
@property(readonly) const char *UTF8String;
@end
@interface NSError : NSObject
@property(readonly) NSString *localizedDescription;
@end
typedef struct dispatch_queue_s *dispatch_queue_t;
typedef void (^dispatch_block_t)(void);
extern "C" void dispatch_sync(dispatch_queue_t q, dispatch_block_t b);
