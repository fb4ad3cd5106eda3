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
#include <string>

#include "gguf_types.h"
#include "mps_host.h"
#include "torch_binding.h"

using gguf_mps::dtype_suffix;
using gguf_mps::pipeline;
using gguf_mps::set_tensor;

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
          set_tensor(encoder, blob, 0);
          set_tensor(encoder, dst, 1);
          [encoder setBytes:&n_elements length:sizeof(n_elements) atIndex:2];
          [encoder dispatchThreads:MTLSizeMake(NSUInteger(n_threads), 1, 1)
              threadsPerThreadgroup:MTLSizeMake(group, 1, 1)];
      }
    });
    if (!aligned_out) out.copy_(dst);
}
