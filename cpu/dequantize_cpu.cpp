// CPU backend: the per-type decode functions of metal/*.metal compiled as C++ (cpu/cpu_kernels.h), run
// over the launch description's threads with at::parallel_for, for the best instruction set available.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <ATen/core/Tensor.h>

#include "cpu_dispatch.h"
#include "torch_binding.h"

namespace {

// The AVX2 + F16C build for float16/bfloat16 output (hardware conversion: 2-6x faster); the baseline
// build for float32 output, where GCC's baseline code measured faster on most types (benchmarks/RESULTS.md).
// GGUF_DEQUANT_CPU_ISA=baseline forces the baseline build (tests, benchmarks).
bool use_avx2(OutKind kind) {
    if (kind == OutKind::f32) return false;
#if defined(__x86_64__)
    static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                                  !(std::getenv("GGUF_DEQUANT_CPU_ISA") &&
                                    std::strcmp(std::getenv("GGUF_DEQUANT_CPU_ISA"), "baseline") == 0);
    return supported;
#else
    return false;
#endif
}

}  // namespace

void dequantize_out(const at::Tensor &blob_in, int64_t qtype, at::Tensor &out) {
    const GgufType &type = check_dequantize_args(blob_in, qtype, out);
    TORCH_CHECK_VALUE(blob_in.device().is_cpu(), "gguf_dequant (CPU build): blob must be on the CPU, got ",
                      blob_in.device());
    const int64_t n = out.numel();
    if (n == 0) return;
    at::Tensor blob = blob_in.contiguous();
    if (reinterpret_cast<uintptr_t>(blob.data_ptr()) % type.align != 0) {
        blob = blob.clone();  // a fresh allocation is aligned; the kernels read half fields in place
    }
    OutKind kind;
    switch (out.scalar_type()) {
        case at::kFloat: kind = OutKind::f32; break;
        case at::kHalf: kind = OutKind::f16; break;
        case at::kBFloat16: kind = OutKind::bf16; break;
        default: TORCH_CHECK_TYPE(false, "gguf_dequant: unsupported output dtype ", out.scalar_type());
    }
#if defined(__x86_64__)
    const bool done = use_avx2(kind) ? gguf_avx2::dequantize(qtype, kind, blob.data_ptr(), out.data_ptr(), n)
                                 : gguf_generic::dequantize(qtype, kind, blob.data_ptr(), out.data_ptr(), n);
#else
    const bool done = gguf_generic::dequantize(qtype, kind, blob.data_ptr(), out.data_ptr(), n);
#endif
    TORCH_CHECK(done, "gguf_dequant: no CPU kernel for type id ", qtype);
}
