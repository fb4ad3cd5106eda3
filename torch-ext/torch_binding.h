#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

// A dequantizable GGML type, from the generated table in metal/gguf_types.h.
struct GgufType {
    int64_t id;
    const char *name;          // lower case, as in the kernel names: "q4_k"
    int64_t block_elems;
    int64_t block_bytes;
    int64_t elems_per_thread;  // the launch description (gguf_dequant/launch.py)
    int64_t align;             // alignment the kernels need for the source bytes
};

// The type with this id; raises a c10::Error (ValueError in Python) for anything else.
const GgufType &lookup_type(int64_t qtype);

// Looks up the type and checks every argument the backends share (dtypes, sizes, shapes, devices,
// contiguity of out). Raises a c10::Error naming the problem.
const GgufType &check_dequantize_args(const at::Tensor &blob, int64_t qtype, const at::Tensor &out);

// Shape of the result: blob's leading dims, last dim converted from bytes to elements.
std::vector<int64_t> dequantized_shape(const at::Tensor &blob, const GgufType &type);

// Functional form: allocates the result and calls dequantize_out.
at::Tensor dequantize(const at::Tensor &blob, int64_t qtype, at::ScalarType dtype);

// Implemented once per backend (cpu/dequantize_cpu.cpp, metal/dequantize.mm).
void dequantize_out(const at::Tensor &blob, int64_t qtype, at::Tensor &out);

// Type ids this build can dequantize.
std::vector<int64_t> supported_types();

// Fused ops on packed weights (README, "Compute on packed weights"). The functional forms below check every
// argument the backends share, convert, allocate and call the backend entry points.
at::Tensor linear(const at::Tensor &x, const at::Tensor &blocks, int64_t qtype, const std::optional<at::Tensor> &bias);
at::Tensor mul_mat_vec(const at::Tensor &blocks, const at::Tensor &x, int64_t ggml_type, int64_t out_features);
at::Tensor mul_mat_id(const at::Tensor &blocks, const at::Tensor &x, const at::Tensor &ids, int64_t ggml_type,
                      int64_t out_features);

// Backend entry points, implemented once per backend (cpu/matmul_cpu.cpp, metal/matmul.mm).
// y = x @ W^T (+ bias). x: (M, K) contiguous f32/f16/bf16; blocks: (N, bytes_per_row) contiguous uint8;
// bias: (N,) float32 or absent; out: (M, N) contiguous f32/f16/bf16, written once per element (sum in f32,
// bias added in f32, one rounding to out's dtype).
void gguf_linear_out(const at::Tensor &x, const at::Tensor &blocks, int64_t qtype,
                     const std::optional<at::Tensor> &bias, at::Tensor &out);
// out[t, u] = W[ids[t, u]] @ x[t, u % Ux]. x: (T, Ux, K) contiguous with Ux == 1 or Ux == U; blocks: (E, N, bpr);
// ids: (T, U) int32 contiguous (range-checked by the binding on CPU); out: (T, U, N) f32.
void gguf_mul_mat_id_out(const at::Tensor &x, const at::Tensor &blocks, const at::Tensor &ids, int64_t qtype,
                         at::Tensor &out);
