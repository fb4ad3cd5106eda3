#pragma once

#include <cstdint>
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
