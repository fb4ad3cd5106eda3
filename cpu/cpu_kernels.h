// One instruction-set build of every kernel: included by kernels_generic.cpp, kernels_avx2.cpp and
// kernels_avx512.cpp, each defining GGUF_CPU_NS, so the copies of the (inline) kernel code never mix at link time.
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/Parallel.h>

#include "cpu_dispatch.h"

namespace GGUF_CPU_NS {

// The kernel files come after every system and torch header: the metal_stdlib shim defines
// address-space words (device, thread, constant, kernel) as macros.
#include "gguf_kernels.h"
#undef device
#undef thread
#undef threadgroup
#undef constant
#undef kernel

// About 16K output elements per task: enough work to amortise scheduling, small enough to balance.
constexpr int64_t kGrainElems = 1 << 14;

// Tasks split the launch's threads at whole blocks (SUBS threads each), so every task runs the
// whole-block loop of gguf_cpu_threads.
template <typename T>
bool run(int64_t qtype, const uchar *src, T *dst, int64_t n_elements) {
    switch (qtype) {
#define GGUF_CPU_CASE(ID, NAME, QK, BYTES, SUB)                                                     \
    case ID: {                                                                                      \
        constexpr int64_t SUBS = QK > SUB ? QK / SUB : 1;                                           \
        const int64_t n_threads = (n_elements + SUB - 1) / SUB;                                     \
        const int64_t n_groups = (n_threads + SUBS - 1) / SUBS;                                     \
        at::parallel_for(0, n_groups, kGrainElems / (SUB * SUBS), [&](int64_t g0, int64_t g1) {     \
            const int64_t t1 = g1 * SUBS < n_threads ? g1 * SUBS : n_threads;                       \
            cpu_dequantize_##NAME<T>(src, dst, g0 * SUBS, t1, n_elements);                          \
        });                                                                                         \
        return true;                                                                                \
    }
        GGUF_FOR_EACH_FLOAT_TYPE(GGUF_CPU_CASE)
        GGUF_FOR_EACH_QUANT_TYPE(GGUF_CPU_CASE)
#undef GGUF_CPU_CASE
    }
    return false;
}

bool dequantize(int64_t qtype, OutKind kind, const void *src, void *dst, int64_t n_elements) {
    const uchar *bytes = static_cast<const uchar *>(src);
    switch (kind) {
        case OutKind::f32: return run(qtype, bytes, static_cast<float *>(dst), n_elements);
        case OutKind::f16: return run(qtype, bytes, static_cast<metal::half *>(dst), n_elements);
        case OutKind::bf16: return run(qtype, bytes, static_cast<metal::bfloat *>(dst), n_elements);
    }
    return false;
}

}  // namespace GGUF_CPU_NS
