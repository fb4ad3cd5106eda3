// CPU backend: the per-type decode functions of metal/*.metal compiled as C++ (GGUF_CPU), run over the
// launch description's threads with at::parallel_for.
#include <cstdint>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include "torch_binding.h"

// The kernel files come last: the metal_stdlib shim defines address-space words (device, thread,
// constant, kernel) as macros, which must not reach any torch header.
#include "gguf_kernels.h"
#undef device
#undef thread
#undef threadgroup
#undef constant
#undef kernel

namespace {

// About 16K output elements per task: enough work to amortise scheduling, small enough to balance.
constexpr int64_t kGrainElems = 1 << 14;

template <typename T>
void run(int64_t qtype, const uchar *src, T *dst, int64_t n_elements) {
    switch (qtype) {
#define GGUF_CPU_CASE(ID, NAME, QK, BYTES, SUB)                                                     \
    case ID: {                                                                                      \
        const int64_t n_threads = (n_elements + SUB - 1) / SUB;                                     \
        at::parallel_for(0, n_threads, kGrainElems / SUB, [&](int64_t t0, int64_t t1) {             \
            cpu_dequantize_##NAME<T>(src, dst, t0, t1, n_elements);                                 \
        });                                                                                         \
        return;                                                                                     \
    }
        GGUF_FOR_EACH_FLOAT_TYPE(GGUF_CPU_CASE)
        GGUF_FOR_EACH_QUANT_TYPE(GGUF_CPU_CASE)
#undef GGUF_CPU_CASE
    }
    TORCH_CHECK(false, "gguf_dequant: no CPU kernel for type id ", qtype);
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
    const uchar *src = static_cast<const uchar *>(blob.data_ptr());
    switch (out.scalar_type()) {
        case at::kFloat:
            run(qtype, src, out.data_ptr<float>(), n);
            break;
        case at::kHalf:
            run(qtype, src, reinterpret_cast<metal::half *>(out.data_ptr<at::Half>()), n);
            break;
        case at::kBFloat16:
            run(qtype, src, reinterpret_cast<metal::bfloat *>(out.data_ptr<at::BFloat16>()), n);
            break;
        default:
            TORCH_CHECK(false, "gguf_dequant: unsupported output dtype ", out.scalar_type());
    }
}
