// Metal host dispatch: encodes the dequantize kernels on torch's current MPS stream.
//
// The kernels are those of metal/*.metal, embedded by kernel-builder as a metallib. The launch follows
// gguf_dequant/launch.py (via the generated gguf_types.h): a 1-D grid of ceil(n / elements per thread)
// threads, at most GGUF_MAX_GRID_THREADS, GGUF_THREADGROUP_SIZE per group or fewer when the pipeline or the
// grid allows fewer (launch.group_size), buffers 0 = source bytes, 1 = output, 2 = element count.
#include <ATen/mps/MPSDevice.h>
#include <ATen/mps/MPSStream.h>
#include <ATen/native/mps/OperationUtils.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>

#include "gguf_types.h"
#include "torch_binding.h"

#ifdef EMBEDDED_METALLIB_HEADER
#include EMBEDDED_METALLIB_HEADER
#else
#error "EMBEDDED_METALLIB_HEADER is not defined (kernel-builder embeds the compiled shaders)"
#endif

namespace {

id<MTLBuffer> buffer_of(const at::Tensor &t) {
    return __builtin_bit_cast(id<MTLBuffer>, t.storage().data());
}

id<MTLLibrary> library(id<MTLDevice> device) {
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
id<MTLComputePipelineState> pipeline(id<MTLDevice> device, const std::string &name) {
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

const char *dtype_suffix(at::ScalarType dtype) {
    switch (dtype) {
        case at::kFloat: return "f32";
        case at::kHalf: return "f16";
        case at::kBFloat16: return "bf16";
        default: TORCH_CHECK(false, "gguf_dequant: unsupported output dtype ", dtype);
    }
}

}  // namespace

void dequantize_out(const at::Tensor &blob_in, int64_t qtype, at::Tensor &out) {
    const GgufType &type = check_dequantize_args(blob_in, qtype, out);
    TORCH_CHECK_VALUE(blob_in.device().is_mps(), "gguf_dequant (Metal build): blob must be on the mps device, got ",
                      blob_in.device());
    const int64_t n = out.numel();
    if (n == 0) return;
    // launch.checked_threads: kernels index threads with a 32-bit thread_position_in_grid.
    const int64_t n_threads = (n + type.elems_per_thread - 1) / type.elems_per_thread;
    TORCH_CHECK_VALUE(uint64_t(n_threads) <= GGUF_MAX_GRID_THREADS, "gguf_dequant: ", n, " elements of ", type.name,
                      " need ", n_threads, " threads, more than one Metal launch can index (", GGUF_MAX_GRID_THREADS,
                      "); split the tensor");

    // The kernels read half fields in place and store 4 outputs at a time: realign when needed.
    at::Tensor blob = blob_in.contiguous();
    if ((blob.storage_offset() % type.align) != 0) blob = blob.clone();
    const bool aligned_out = (out.storage_offset() % 4) == 0;
    at::Tensor dst = aligned_out ? out : at::empty(out.sizes(), out.options());

    id<MTLDevice> device = at::mps::MPSDevice::getInstance()->device();
    const std::string name = std::string("dequantize_") + type.name + "_" + dtype_suffix(out.scalar_type());
    id<MTLComputePipelineState> pso = pipeline(device, name);
    // launch.group_size: the default group, capped by the pipeline's limit and by the grid.
    const NSUInteger group = std::min<NSUInteger>(
        {NSUInteger(GGUF_THREADGROUP_SIZE), pso.maxTotalThreadsPerThreadgroup, NSUInteger(n_threads)});
    const uint64_t n_elements = uint64_t(n);

    at::mps::MPSStream *stream = at::mps::getCurrentMPSStream();
    dispatch_sync(stream->queue(), ^{
      @autoreleasepool {
          // torch's coalescing encoder: never open a second encoder on its command buffer.
          id<MTLComputeCommandEncoder> encoder = stream->commandEncoder();
          [encoder setComputePipelineState:pso];
          [encoder setBuffer:buffer_of(blob) offset:blob.storage_offset() * blob.element_size() atIndex:0];
          [encoder setBuffer:buffer_of(dst) offset:dst.storage_offset() * dst.element_size() atIndex:1];
          [encoder setBytes:&n_elements length:sizeof(n_elements) atIndex:2];
          [encoder dispatchThreads:MTLSizeMake(NSUInteger(n_threads), 1, 1)
              threadsPerThreadgroup:MTLSizeMake(group, 1, 1)];
      }
    });
    if (!aligned_out) out.copy_(dst);
}
