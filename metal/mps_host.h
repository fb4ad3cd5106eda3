// Host-side helpers shared by the Metal dispatch files (dequantize.mm, matmul.mm): the embedded library,
// one pipeline cache for the process (inline functions: their static caches are shared by every file),
// tensors as buffers, and the dtype suffix of kernel names. Objective-C++; not a shader header.
#pragma once

#include <ATen/core/Tensor.h>

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <mutex>
#include <string>
#include <unordered_map>

#ifdef EMBEDDED_METALLIB_HEADER
#include EMBEDDED_METALLIB_HEADER
#else
#error "EMBEDDED_METALLIB_HEADER is not defined (kernel-builder embeds the compiled shaders)"
#endif

namespace gguf_mps {

inline id<MTLBuffer> buffer_of(const at::Tensor &t) {
    return __builtin_bit_cast(id<MTLBuffer>, t.storage().data());
}

// Binds tensor t (its storage at t's own offset) to buffer index `index`.
inline void set_tensor(id<MTLComputeCommandEncoder> encoder, const at::Tensor &t, NSUInteger index) {
    [encoder setBuffer:buffer_of(t) offset:t.storage_offset() * t.element_size() atIndex:index];
}

inline id<MTLLibrary> library(id<MTLDevice> device) {
    static id<MTLLibrary> lib = nil;
    static std::once_flag once;
    std::call_once(once, [&] {
        NSError *error = nil;
        lib = EMBEDDED_METALLIB_NAMESPACE::createLibrary(device, &error);
        TORCH_CHECK(lib != nil, "gguf_dequant: failed to load the embedded Metal library: ",
                    error ? error.localizedDescription.UTF8String : "unknown error");
    });
    return lib;
}

// One pipeline per kernel, created on first use and kept for the life of the process. The autorelease
// pool drains the temporaries (name string, error) even when no caller has a pool; the function object
// is only needed to build the pipeline and is released here (ARC does it by itself).
inline id<MTLComputePipelineState> pipeline(id<MTLDevice> device, const std::string &name) {
    static std::mutex mutex;
    static std::unordered_map<std::string, id<MTLComputePipelineState>> cache;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    id<MTLComputePipelineState> pso = nil;
    std::string failure;
    @autoreleasepool {
        id<MTLFunction> fn = [library(device) newFunctionWithName:[NSString stringWithUTF8String:name.c_str()]];
        if (fn == nil) {
            failure = "the Metal library has no kernel " + name;
        } else {
            NSError *error = nil;
            pso = [device newComputePipelineStateWithFunction:fn error:&error];
            if (pso == nil) {
                failure = "failed to create the pipeline for " + name + ": " +
                          (error ? error.localizedDescription.UTF8String : "unknown error");
            }
#if !__has_feature(objc_arc)
            [fn release];
#endif
        }
    }
    TORCH_CHECK(pso != nil, "gguf_dequant: ", failure);  // thrown outside the pool, which then drained normally
    cache.emplace(name, pso);
    return pso;
}

inline const char *dtype_suffix(at::ScalarType dtype) {
    switch (dtype) {
        case at::kFloat: return "f32";
        case at::kHalf: return "f16";
        case at::kBFloat16: return "bf16";
        default: TORCH_CHECK(false, "gguf_dequant: unsupported dtype ", dtype, " for the Metal kernels");
    }
}

}  // namespace gguf_mps
