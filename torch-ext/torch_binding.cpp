#include <torch/library.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/where.h>
#include <c10/util/accumulate.h>

#include "gguf_types.h"
#include "registration.h"
#include "torch_binding.h"

namespace {

constexpr GgufType kTypes[] = {
#define GGUF_TYPE_ROW(ID, NAME, QK, BYTES, SUB) {ID, #NAME, QK, BYTES, SUB, ID == 0 ? 4 : (BYTES % 2 ? 1 : 2)},
    GGUF_FOR_EACH_FLOAT_TYPE(GGUF_TYPE_ROW) GGUF_FOR_EACH_QUANT_TYPE(GGUF_TYPE_ROW)
#undef GGUF_TYPE_ROW
};

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

bool is_float(const at::Tensor &t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// Packed weights of `dims` dimensions (rows of whole blocks in the last); returns the elements per row (K).
int64_t check_packed(const char *op, const at::Tensor &blocks, int64_t dims, const GgufType &type) {
    TORCH_CHECK_TYPE(blocks.scalar_type() == at::kByte, "gguf_dequant.", op, ": blocks must be uint8 (raw GGUF ",
                     "bytes), got ", blocks.scalar_type());
    TORCH_CHECK_VALUE(blocks.dim() == dims, "gguf_dequant.", op, ": blocks must be ",
                      dims == 2 ? "(out_features, bytes_per_row)" : "(experts, out_features, bytes_per_row)",
                      ", got shape ", blocks.sizes());
    TORCH_CHECK_VALUE(blocks.is_contiguous(), "gguf_dequant.", op, ": blocks must be contiguous");
    TORCH_CHECK_VALUE(blocks.size(-1) % type.block_bytes == 0, "gguf_dequant.", op, ": ", type.name, " blocks are ",
                      type.block_bytes, " bytes each, but rows have ", blocks.size(-1), " bytes");
    return blocks.size(-1) / type.block_bytes * type.block_elems;
}

// x: float32/float16/bfloat16 with K features in its last dimension, on blocks' device.
void check_input(const char *op, const at::Tensor &x, const at::Tensor &blocks, int64_t K, const GgufType &type) {
    TORCH_CHECK_TYPE(is_float(x), "gguf_dequant.", op, ": x must be float32, float16 or bfloat16, got ",
                     x.scalar_type());
    TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == K, "gguf_dequant.", op, ": x has shape ", x.sizes(),
                      " but the ", type.name, " rows of blocks hold ", K, " elements (in_features)");
    TORCH_CHECK_VALUE(x.device() == blocks.device(), "gguf_dequant.", op, ": x is on ", x.device(),
                      " but blocks are on ", blocks.device());
}

void check_out_features(const char *op, int64_t out_features, int64_t N) {
    TORCH_CHECK_VALUE(out_features == N, "gguf_dequant.", op, ": out_features is ", out_features,
                      " but blocks have ", N, " rows");
}

}  // namespace

const GgufType &lookup_type(int64_t qtype) {
    for (const GgufType &t : kTypes) {
        if (t.id == qtype) return t;
    }
    TORCH_CHECK_VALUE(false, "gguf_dequant: GGML type id ", qtype,
                      " is not a dequantizable storage type (unknown, removed, integer or intermediate-only)");
}

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

at::Tensor linear(const at::Tensor &x, const at::Tensor &blocks, int64_t qtype, const std::optional<at::Tensor> &bias) {
    const GgufType &type = lookup_type(qtype);
    const int64_t K = check_packed("linear", blocks, 2, type), N = blocks.size(0);
    check_input("linear", x, blocks, K, type);
    std::optional<at::Tensor> bias_f32;
    if (bias) {
        TORCH_CHECK_TYPE(bias->scalar_type() == at::kFloat || bias->scalar_type() == x.scalar_type(),
                         "gguf_dequant.linear: bias must be float32 or x's dtype (", x.scalar_type(), "), got ",
                         bias->scalar_type());
        TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, "gguf_dequant.linear: bias must be (", N,
                          ",) for ", N, " out_features, got shape ", bias->sizes());
        TORCH_CHECK_VALUE(bias->device() == x.device(), "gguf_dequant.linear: bias is on ", bias->device(),
                          " but x is on ", x.device());
        bias_f32 = bias->to(at::kFloat).contiguous();
    }
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    const int64_t M = c10::multiply_integers(shape.begin(), shape.end() - 1);
    shape.back() = N;
    at::Tensor out = at::empty({M, N}, x.options());
    gguf_linear_out(x.reshape({M, K}).contiguous(), blocks, qtype, bias_f32, out);
    return out.view(shape);
}

at::Tensor mul_mat_vec(const at::Tensor &blocks, const at::Tensor &x, int64_t ggml_type, int64_t out_features) {
    const GgufType &type = lookup_type(ggml_type);
    const int64_t K = check_packed("mul_mat_vec", blocks, 2, type);
    check_out_features("mul_mat_vec", out_features, blocks.size(0));
    check_input("mul_mat_vec", x, blocks, K, type);
    TORCH_CHECK_VALUE(x.dim() == 2, "gguf_dequant.mul_mat_vec: x must be (rows, in_features), got shape ", x.sizes());
    at::Tensor out = at::empty({x.size(0), out_features}, x.options().dtype(at::kFloat));
    gguf_linear_out(x.contiguous(), blocks, ggml_type, std::nullopt, out);
    return out;
}

at::Tensor mul_mat_id(const at::Tensor &blocks, const at::Tensor &x, const at::Tensor &ids, int64_t ggml_type,
                      int64_t out_features) {
    const GgufType &type = lookup_type(ggml_type);
    const int64_t K = check_packed("mul_mat_id", blocks, 3, type), E = blocks.size(0);
    check_out_features("mul_mat_id", out_features, blocks.size(1));
    check_input("mul_mat_id", x, blocks, K, type);
    TORCH_CHECK_TYPE(ids.scalar_type() == at::kInt || ids.scalar_type() == at::kLong,
                     "gguf_dequant.mul_mat_id: ids must be int32 or int64, got ", ids.scalar_type());
    TORCH_CHECK_VALUE(ids.dim() == 2, "gguf_dequant.mul_mat_id: ids must be (tokens, experts_per_token), got shape ",
                      ids.sizes());
    TORCH_CHECK_VALUE(ids.device() == x.device(), "gguf_dequant.mul_mat_id: ids are on ", ids.device(),
                      " but x is on ", x.device());
    const int64_t T = ids.size(0), U = ids.size(1);
    TORCH_CHECK_VALUE((x.dim() == 2 || (x.dim() == 3 && (x.size(1) == 1 || x.size(1) == U))) && x.size(0) == T,
                      "gguf_dequant.mul_mat_id: x must be (", T, ", ", K, ") or (", T, ", ", U, " or 1, ", K,
                      ") for ids of shape ", ids.sizes(), ", got shape ", x.sizes());
    if (ids.device().is_cpu() && ids.numel() > 0) {
        const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
        TORCH_CHECK_INDEX(lo >= 0 && hi < E, "gguf_dequant.mul_mat_id: ids must be in [0, ", E, ") for ", E,
                          " experts, got values in [", lo, ", ", hi, "]");
    }
    at::Tensor out = at::empty({T, U, out_features}, x.options().dtype(at::kFloat));
    // On the GPU (no range check: it would sync) an out-of-range id must stay out of range through the
    // narrowing to int32, never wrap onto a real expert: map it to -1 (the kernel reads nothing for it).
    const at::Tensor ids32 =
        ids.device().is_cpu() ? ids.to(at::kInt) : at::where(ids.ge(0).logical_and(ids.lt(E)), ids, -1).to(at::kInt);
    gguf_mul_mat_id_out((x.dim() == 2 ? x.unsqueeze(1) : x).contiguous(), blocks, ids32.contiguous(), ggml_type,
                        out);
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
    ops.def("linear(Tensor x, Tensor blocks, int qtype, Tensor? bias) -> Tensor");
    ops.def("mul_mat_vec(Tensor blocks, Tensor x, int ggml_type, int out_features) -> Tensor");
    ops.def("mul_mat_id(Tensor blocks, Tensor x, Tensor ids, int ggml_type, int out_features) -> Tensor");
#if defined(CPU_KERNEL)
    constexpr c10::DeviceType kDevice = c10::kCPU;
#elif defined(METAL_KERNEL)
    constexpr c10::DeviceType kDevice = c10::kMPS;
#else
#error "build with CPU_KERNEL or METAL_KERNEL defined"
#endif
    ops.impl("dequantize", kDevice, &dequantize);
    ops.impl("dequantize_out", kDevice, &dequantize_out);
    ops.impl("linear", kDevice, &linear);
    ops.impl("mul_mat_vec", kDevice, &mul_mat_vec);
    ops.impl("mul_mat_id", kDevice, &mul_mat_id);
}

REGISTER_EXTENSION(TORCH_EXTENSION_NAME)
