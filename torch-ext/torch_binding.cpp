#include <torch/library.h>

#include <ATen/ops/empty.h>

#include "gguf_types.h"
#include "registration.h"
#include "torch_binding.h"

namespace {

constexpr GgufType kTypes[] = {
#define GGUF_TYPE_ROW(ID, NAME, QK, BYTES, SUB) {ID, #NAME, QK, BYTES, SUB, ID == 0 ? 4 : (BYTES % 2 ? 1 : 2)},
    GGUF_FOR_EACH_FLOAT_TYPE(GGUF_TYPE_ROW) GGUF_FOR_EACH_QUANT_TYPE(GGUF_TYPE_ROW)
#undef GGUF_TYPE_ROW
};

const GgufType &lookup_type(int64_t qtype) {
    for (const GgufType &t : kTypes) {
        if (t.id == qtype) return t;
    }
    TORCH_CHECK_VALUE(false, "gguf_dequant: GGML type id ", qtype,
                      " is not a dequantizable storage type (unknown, removed, integer or intermediate-only)");
}

void check_blob(const at::Tensor &blob, const GgufType &type) {
    TORCH_CHECK_TYPE(blob.scalar_type() == at::kByte, "gguf_dequant: blob must be a uint8 tensor of raw ",
                     "GGUF bytes, got ", blob.scalar_type());
    TORCH_CHECK_VALUE(blob.dim() >= 1, "gguf_dequant: blob must have at least one dimension (bytes)");
    TORCH_CHECK_VALUE(blob.size(-1) % type.block_bytes == 0, "gguf_dequant: ", type.name, " blocks are ",
                      type.block_bytes, " bytes each, but the last dimension of the blob has ", blob.size(-1),
                      " bytes, which is not a multiple of ", type.block_bytes);
}

void check_dtype(at::ScalarType dtype) {
    TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                     "gguf_dequant: unsupported output dtype ", dtype, "; use float32, float16 or bfloat16");
}

}  // namespace

const GgufType &check_dequantize_args(const at::Tensor &blob, int64_t qtype, const at::Tensor &out) {
    const GgufType &type = lookup_type(qtype);
    check_blob(blob, type);
    check_dtype(out.scalar_type());
    const std::vector<int64_t> shape = dequantized_shape(blob, type);
    TORCH_CHECK_VALUE(out.sizes() == at::IntArrayRef(shape), "gguf_dequant: out has shape ", out.sizes(),
                      ", expected ", at::IntArrayRef(shape));
    TORCH_CHECK_VALUE(out.is_contiguous(), "gguf_dequant: out must be contiguous");
    TORCH_CHECK_VALUE(blob.device() == out.device(), "gguf_dequant: blob is on ", blob.device(),
                      " but out is on ", out.device());
    return type;
}

std::vector<int64_t> dequantized_shape(const at::Tensor &blob, const GgufType &type) {
    std::vector<int64_t> shape(blob.sizes().begin(), blob.sizes().end());
    shape.back() = shape.back() / type.block_bytes * type.block_elems;
    return shape;
}

at::Tensor dequantize(const at::Tensor &blob, int64_t qtype, at::ScalarType dtype) {
    const GgufType &type = lookup_type(qtype);
    check_blob(blob, type);
    check_dtype(dtype);
    at::Tensor out = at::empty(dequantized_shape(blob, type), blob.options().dtype(dtype));
    dequantize_out(blob, qtype, out);
    return out;
}

std::vector<int64_t> supported_types() {
    std::vector<int64_t> ids;
    for (const GgufType &t : kTypes) ids.push_back(t.id);
    return ids;
}

TORCH_LIBRARY_EXPAND(TORCH_EXTENSION_NAME, ops) {
    ops.def("dequantize(Tensor blob, int qtype, ScalarType dtype) -> Tensor");
    ops.def("dequantize_out(Tensor blob, int qtype, Tensor(a!) out) -> ()");
    ops.def("supported_types() -> int[]", &supported_types);
#if defined(CPU_KERNEL)
    ops.impl("dequantize", c10::kCPU, &dequantize);
    ops.impl("dequantize_out", c10::kCPU, &dequantize_out);
#elif defined(METAL_KERNEL)
    ops.impl("dequantize", c10::kMPS, &dequantize);
    ops.impl("dequantize_out", c10::kMPS, &dequantize_out);
#endif
}

REGISTER_EXTENSION(TORCH_EXTENSION_NAME)
