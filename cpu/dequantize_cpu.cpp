// CPU backend: the per-type decode functions of metal/*.metal compiled as C++ (cpu/cpu_kernels.h), run
// over the launch description's threads with at::parallel_for, for the best instruction set available.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <ATen/core/Tensor.h>

#include "cpu_dispatch.h"
#include "torch_binding.h"

namespace {

enum class Isa { baseline, avx2, avx512 };

// The widest build this CPU runs: AVX-512 (F/BW/VL/DQ + BF16), else AVX2 + F16C, else the baseline.
// GGUF_DEQUANT_CPU_ISA=baseline|avx2 caps it (tests, benchmarks).
Isa pick_isa() {
#if defined(__x86_64__)
    const char *cap = std::getenv("GGUF_DEQUANT_CPU_ISA");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                      !(cap && std::strcmp(cap, "baseline") == 0);
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512bf16") && !(cap && std::strcmp(cap, "avx2") == 0);
    return avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline;
#else
    return Isa::baseline;
#endif
}

bool dequantize_best(int64_t qtype, OutKind kind, const void *src, void *dst, int64_t n) {
    static const Isa isa = pick_isa();
    switch (isa) {
#if defined(__x86_64__)
        case Isa::avx512: return gguf_avx512::dequantize(qtype, kind, src, dst, n);
        case Isa::avx2: return gguf_avx2::dequantize(qtype, kind, src, dst, n);
#endif
        default: return gguf_generic::dequantize(qtype, kind, src, dst, n);
    }
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
    const bool done = dequantize_best(qtype, kind, blob.data_ptr(), out.data_ptr(), n);
    TORCH_CHECK(done, "gguf_dequant: no CPU kernel for type id ", qtype);
}
