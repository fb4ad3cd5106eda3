// Metal host dispatch of the compute-on-packed-weights ops (metal/gguf_matmul.h), encoded on torch's
// current MPS stream exactly as dequantize.mm encodes dequantize.
//
// torch_binding.cpp has already checked the arguments (dtypes, ranks, K against the blocks' row length,
// N, bias length, devices, contiguity; ids converted to int32). Launch geometry follows
// gguf_dequant/launch.py through the generated constants in gguf_types.h: mul_mv for M <= GGUF_MATMUL_X_ROWS
// rows, mul_mm above (contract v2: each tier keeps one order, so a row's bits never depend on M within its
// tier); mul_mv_id for up to 8 tokens (a threadgroup row per slot), mul_mm_id_map then mul_mm_id for more
// (the slots grouped by expert on the GPU). Every launch is
// dispatchThreadgroups.
#include <ATen/mps/MPSDevice.h>
#include <ATen/mps/MPSStream.h>
#include <ATen/native/mps/OperationUtils.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

#include "gguf_types.h"
#include "mps_host.h"
#include "torch_binding.h"

namespace {

using gguf_mps::dtype_suffix;
using gguf_mps::pipeline;
using gguf_mps::set_tensor;

// The kernels read the blocks' half fields in place (row starts are multiples of the block size), and the
// mat-vec kernels the float types' rows 16 bytes at a time.
at::Tensor aligned_blocks(const at::Tensor &blocks) {
    at::Tensor b = blocks.contiguous();
    return (b.storage_offset() % 16) != 0 ? b.clone() : b;
}

// The mat-vec kernels read x 4 elements at a time (rows are multiples of 32 elements).
at::Tensor aligned_x(const at::Tensor &x) {
    at::Tensor c = x.contiguous();
    return (c.storage_offset() % 4) != 0 ? c.clone() : c;
}

// The pipeline of kernel `name`, refusing a device whose limit is below the fixed threadgroup size the
// matmul geometry needs (its simdgroup layout and threadgroup tile depend on it).
id<MTLComputePipelineState> launchable_pipeline(id<MTLDevice> device, const std::string &name, NSUInteger threads) {
    id<MTLComputePipelineState> pso = pipeline(device, name);
    TORCH_CHECK(pso.maxTotalThreadsPerThreadgroup >= threads, "gguf_dequant: ", name, " allows ",
                pso.maxTotalThreadsPerThreadgroup, " threads per threadgroup, the launch needs ", threads);
    return pso;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_grid(int64_t groups_x, int64_t groups_y) {
    TORCH_CHECK_VALUE(groups_x <= int64_t(UINT32_MAX) && groups_y <= int64_t(UINT32_MAX),
                      "gguf_dequant: matmul of this size is too large for one launch");
}

// Binds the tensors to buffers 0, 1, ... and the scalars to the indices after them, then launches `groups`
// threadgroups of `threads` on torch's current MPS stream (launches on it run in order).
template <size_t NT, size_t S>
void encode_threadgroups(id<MTLComputePipelineState> pso, std::array<at::Tensor, NT> tensors,
                         std::array<uint64_t, S> scalars, MTLSize groups, NSUInteger threads) {
    at::mps::MPSStream *stream = at::mps::getCurrentMPSStream();
    dispatch_sync(stream->queue(), ^{
      @autoreleasepool {
          // torch's coalescing encoder: never open a second encoder on its command buffer.
          id<MTLComputeCommandEncoder> encoder = stream->commandEncoder();
          [encoder setComputePipelineState:pso];
          for (size_t i = 0; i < tensors.size(); ++i) {
              set_tensor(encoder, tensors[i], i);
          }
          for (size_t i = 0; i < scalars.size(); ++i) {
              [encoder setBytes:&scalars[i] length:sizeof(uint64_t) atIndex:tensors.size() + i];
          }
          [encoder dispatchThreadgroups:groups threadsPerThreadgroup:MTLSizeMake(threads, 1, 1)];
      }
    });
}

// launch.mv_wide_m: the rows of x from which a type's mul_mv takes GGUF_MV_WIDE_ROWS weight rows per simdgroup.
int64_t mv_wide_m(int64_t qtype) {
    switch (qtype) {
#define GGUF_MV_WIDE_M_CASE(ID, NAME, ELEMS, BYTES, PER_THREAD) \
    case ID:                                                    \
        return GGUF_MV_WIDE_M_##NAME;
        GGUF_FOR_EACH_QUANT_TYPE(GGUF_MV_WIDE_M_CASE)
#undef GGUF_MV_WIDE_M_CASE
    default:
        return GGUF_MV_WIDE_M;
    }
}

}  // namespace

void gguf_linear_out(const at::Tensor &x_in, const at::Tensor &blocks_in, int64_t qtype,
                     const std::optional<at::Tensor> &bias_in, at::Tensor &out) {
    const GgufType &type = lookup_type(qtype);
    TORCH_CHECK_VALUE(x_in.device().is_mps() && blocks_in.device().is_mps() && out.device().is_mps(),
                      "gguf_dequant (Metal build): x, blocks and out must be on the mps device");
    TORCH_CHECK_VALUE(x_in.dim() == 2 && blocks_in.dim() == 2 && out.dim() == 2,
                      "gguf_dequant: gguf_linear_out takes x (M, K), blocks (N, bytes_per_row), out (M, N)");
    const int64_t M = x_in.size(0), K = x_in.size(1), N = blocks_in.size(0);
    if (M == 0 || N == 0) return;
    TORCH_CHECK_VALUE(out.scalar_type() == at::kFloat || out.scalar_type() == x_in.scalar_type(),
                      "gguf_dequant (Metal build): out must be float32 or x's dtype, got ", out.scalar_type());
    TORCH_CHECK_VALUE(out.is_contiguous() && out.size(0) == M && out.size(1) == N,
                      "gguf_dequant: out must be a contiguous (", M, ", ", N, ") tensor");

    const at::Tensor x = aligned_x(x_in);
    const at::Tensor blocks = aligned_blocks(blocks_in);
    const bool has_bias = bias_in.has_value() && bias_in->defined();
    // Buffer 2 must be bound even without a bias; the kernel does not read it then.
    const at::Tensor bias = has_bias ? bias_in->to(at::kFloat).contiguous() : x;

    const bool mv = M <= int64_t(GGUF_MATMUL_X_ROWS);
    const int64_t mv_rows = M >= mv_wide_m(qtype) ? GGUF_MV_WIDE_ROWS : GGUF_MV_ROWS;  // launch.mv_rows
    const int64_t groups_x = mv ? ceil_div(N, GGUF_MV_SIMDGROUPS * mv_rows) : ceil_div(N, GGUF_MM_ROWS);
    const int64_t groups_y = mv ? ceil_div(M, GGUF_MATMUL_X_ROWS) : ceil_div(M, GGUF_MM_X_ROWS);
    const NSUInteger threads = (mv ? GGUF_MV_SIMDGROUPS : GGUF_MM_SIMDGROUPS) * GGUF_SIMD_WIDTH;
    check_grid(groups_x, groups_y);

    id<MTLDevice> device = at::mps::MPSDevice::getInstance()->device();
    const std::string name = std::string(mv ? "mul_mv_" : "mul_mm_") + type.name + "_" +
                             dtype_suffix(x.scalar_type()) + "_" + dtype_suffix(out.scalar_type());
    id<MTLComputePipelineState> pso = launchable_pipeline(device, name, threads);
    // std::array, not a C array: blocks cannot capture arrays.
    const std::array<uint64_t, 4> scalars = {uint64_t(K), uint64_t(N), uint64_t(M), uint64_t(has_bias ? 1 : 0)};
    encode_threadgroups(pso, std::array<at::Tensor, 4>{blocks, x, bias, out}, scalars,
                        MTLSizeMake(NSUInteger(groups_x), NSUInteger(groups_y), 1), threads);
}

void gguf_mul_mat_id_out(const at::Tensor &x_in, const at::Tensor &blocks_in, const at::Tensor &ids_in,
                         int64_t qtype, at::Tensor &out) {
    const GgufType &type = lookup_type(qtype);
    TORCH_CHECK_VALUE(x_in.device().is_mps() && blocks_in.device().is_mps() && ids_in.device().is_mps() &&
                          out.device().is_mps(),
                      "gguf_dequant (Metal build): x, blocks, ids and out must be on the mps device");
    TORCH_CHECK_VALUE(x_in.dim() == 3 && blocks_in.dim() == 3 && ids_in.dim() == 2 && out.dim() == 3,
                      "gguf_dequant: gguf_mul_mat_id_out takes x (T, Ux, K), blocks (E, N, bytes_per_row), ",
                      "ids (T, U), out (T, U, N)");
    TORCH_CHECK_TYPE(ids_in.scalar_type() == at::kInt, "gguf_dequant: ids must be int32 here, got ",
                     ids_in.scalar_type());
    TORCH_CHECK_VALUE(out.scalar_type() == at::kFloat && out.is_contiguous(),
                      "gguf_dequant: mul_mat_id's out must be a contiguous float32 tensor");
    const int64_t T = ids_in.size(0), U = ids_in.size(1), Ux = x_in.size(1), K = x_in.size(2);
    const int64_t E = blocks_in.size(0), N = blocks_in.size(1);
    if (T == 0 || U == 0 || N == 0) return;

    const at::Tensor x = aligned_x(x_in);
    const at::Tensor ids = ids_in.contiguous();
    const at::Tensor blocks = aligned_blocks(blocks_in);
    id<MTLDevice> device = at::mps::MPSDevice::getInstance()->device();
    if (T <= int64_t(GGUF_MATMUL_X_ROWS)) {
        // The mat-vec tier: a threadgroup row per slot.
        const int64_t groups_x = ceil_div(N, GGUF_MV_SIMDGROUPS * GGUF_MV_ROWS);
        const NSUInteger threads = GGUF_MV_SIMDGROUPS * GGUF_SIMD_WIDTH;
        check_grid(groups_x, T * U);
        const std::string name = std::string("mul_mv_id_") + type.name + "_" + dtype_suffix(x.scalar_type());
        id<MTLComputePipelineState> pso = launchable_pipeline(device, name, threads);
        const std::array<uint64_t, 5> scalars = {uint64_t(K), uint64_t(N), uint64_t(E), uint64_t(U), uint64_t(Ux)};
        encode_threadgroups(pso, std::array<at::Tensor, 4>{blocks, x, ids, out}, scalars,
                            MTLSizeMake(NSUInteger(groups_x), NSUInteger(T * U), 1), threads);
        return;
    }
    // The matrix tier: the slots listed per expert on the GPU (launch.mul_mat_id_map_grid), then 64 x 64 tiles
    // over each expert's slots (launch.mul_mat_id_grid).
    const int64_t slots = T * U;
    check_grid(std::max<int64_t>(E, 1), ceil_div(N, GGUF_MM_ROWS));
    TORCH_CHECK_VALUE(slots <= int64_t(UINT32_MAX) && E * slots <= int64_t(UINT32_MAX),
                      "gguf_dequant: mul_mat_id of this size is too large for one launch");
    const at::Tensor map = at::empty({E + E * slots}, ids.options());
    const std::array<uint64_t, 6> scalars = {uint64_t(K), uint64_t(N), uint64_t(E), uint64_t(U), uint64_t(Ux),
                                             uint64_t(slots)};
    const std::array<at::Tensor, 5> tensors = {blocks, x, ids, out, map};
    encode_threadgroups(launchable_pipeline(device, std::string("mul_mm_id_map_") + type.name, GGUF_SIMD_WIDTH),
                        tensors, scalars, MTLSizeMake(NSUInteger(std::max<int64_t>(E, 1)), 1, 1), GGUF_SIMD_WIDTH);
    const NSUInteger threads = GGUF_MM_SIMDGROUPS * GGUF_SIMD_WIDTH;
    const std::string name = std::string("mul_mm_id_") + type.name + "_" + dtype_suffix(x.scalar_type());
    encode_threadgroups(launchable_pipeline(device, name, threads), tensors, scalars,
                        MTLSizeMake(NSUInteger(ceil_div(N, GGUF_MM_ROWS)), NSUInteger(std::max<int64_t>(E, 1)),
                                    NSUInteger(ceil_div(T, GGUF_MM_X_ROWS))),
                        threads);
}
