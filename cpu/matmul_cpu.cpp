// CPU entry points of the fused ops (declared in torch_binding.h; the binding has checked the arguments):
// x to float32 once, then the matmul kernels of the best instruction set available (cpu/matmul_kernels.h).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "matmul_dispatch.h"
#include "torch_binding.h"

namespace {

constexpr int64_t kMatvecRows = 8;  // MAX_GEMV_ROWS: linear takes the mat-vec tier up to this many rows

enum class Isa { baseline, avx2, avx512, avx512bf16, amx };

// AMX-TILE and AMX-BF16 (CPUID leaf 7) and the tile data state granted by Linux (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once per process).
bool amx_ready() {
#if defined(__x86_64__) && defined(__linux__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool tile = d & (1u << 24), bf16 = d & (1u << 22);
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return tile && bf16 && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return false;
#endif
}

// The widest build this CPU runs; GGUF_DEQUANT_CPU_ISA=baseline, avx2, avx512 (AVX-512 without the BF16
// mat-vec tier) or avx512bf16 (without the AMX tier) caps it (tests, benchmarks). The matrix kernels compute
// the same order in every build; the mat-vec tier (AVX512-BF16) and the AMX tier have their own.
Isa best_isa() {
#if defined(__x86_64__)
    static const Isa isa = [] {
        const char *env = std::getenv("GGUF_DEQUANT_CPU_ISA");
        const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
        const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
        const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("bmi2") &&
                          __builtin_cpu_supports("avx512vbmi");
        if (env && std::strcmp(env, "baseline") == 0) return Isa::baseline;
        if (env && std::strcmp(env, "avx2") == 0) return avx2 ? Isa::avx2 : Isa::baseline;
        if (env && std::strcmp(env, "avx512") == 0) return avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline;
        const Isa widest_vector = bf16 ? Isa::avx512bf16 : avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline;
        if (env && std::strcmp(env, "avx512bf16") == 0) return widest_vector;
        return bf16 && amx_ready() ? Isa::amx : widest_vector;
    }();
    return isa;
#else
    return Isa::baseline;
#endif
}

void run(const std::vector<MatmulJob> &jobs, int64_t qtype) {
    bool done;
    switch (best_isa()) {
#if defined(__x86_64__)
        case Isa::amx:
        case Isa::avx512bf16:
        case Isa::avx512: done = gguf_mm_avx512::matmul(jobs.data(), int64_t(jobs.size())); break;
        case Isa::avx2: done = gguf_mm_avx2::matmul(jobs.data(), int64_t(jobs.size())); break;
#endif
        default: done = gguf_mm_generic::matmul(jobs.data(), int64_t(jobs.size()));
    }
    TORCH_CHECK(done, "gguf_dequant: no CPU matmul kernel for type id ", qtype);
}

// Whether rows of x go through the mat-vec tier (M <= 8, mul_mat_id slots; or, M > 8 rows of bfloat16 x with AMX,
// the AMX tier): AVX512-BF16 and a factored kernel for the type.
bool matvec_tier(int64_t qtype) {
#if defined(__x86_64__)
    return best_isa() >= Isa::avx512bf16 && gguf_mv_avx512bf16::supports(qtype);
#else
    (void)qtype;
    return false;
#endif
}

// Whether M rows of bfloat16 x take the AMX tier: AMX granted and an AMX kernel for the type (M > 8), or for
// M <= 8 (linear, mul_mat_vec) its mat-vec kernel in the same order (cpu/amx_matvec.h).
bool amx_tier(int64_t qtype, int64_t M) {
#if defined(__x86_64__)
    return best_isa() == Isa::amx && (M > kMatvecRows ? gguf_mv_avx512bf16::amx_supports(qtype)
                                                      : gguf_mv_avx512bf16::amx_matvec_supports(qtype));
#else
    (void)qtype, (void)M;
    return false;
#endif
}

// x (rows, K) as the mat-vec tier reads it (MatvecJob): float32 (exact) with each chunk of 32 stored as its even
// then its odd elements, or for the AMX tier bfloat16 as given; and, for types with offsets, the sum of each run
// of `span` (32 or 16) elements (lanes x[i] + x[span / 2 + i], then pairwise down to one lane).
struct MatvecX {
    at::Tensor x, sums;
};

MatvecX matvec_x(const at::Tensor &x_in, int span, bool amx) {
    const bool sums = span != 0;
    const int64_t rows = x_in.size(0), K = x_in.size(1), chunks = K / 32;
    MatvecX r;
    const at::Tensor xf = amx && !sums ? at::Tensor() : x_in.to(at::kFloat).contiguous();
    if (amx) {
        r.x = x_in.contiguous();
    } else {
        r.x = at::empty({rows, K}, x_in.options().dtype(at::kFloat));
        const float *src = xf.data_ptr<float>();
        float *dst = r.x.data_ptr<float>();
        for (int64_t i = 0; i < rows * chunks; ++i) {
            for (int j = 0; j < 16; ++j) {
                dst[32 * i + j] = src[32 * i + 2 * j];
                dst[32 * i + 16 + j] = src[32 * i + 2 * j + 1];
            }
        }
    }
    if (sums) {
        r.sums = at::empty({rows, K / span}, x_in.options().dtype(at::kFloat));
        const float *src = xf.data_ptr<float>();
        float *dst = r.sums.data_ptr<float>();
        for (int64_t i = 0; i < rows * (K / span); ++i) {
            float v[16];
            for (int j = 0; j < span / 2; ++j) v[j] = src[span * i + j] + src[span * i + span / 2 + j];
            for (int h = span / 4; h >= 1; h /= 2) {
                for (int j = 0; j < h; ++j) v[j] = v[j] + v[j + h];
            }
            dst[i] = v[0];
        }
    }
    return r;
}

// Runs the mat-vec tier (or, amx, the AMX tier: its mat-vec kernel for up to 8 rows) on slots grouped by expert: group e = (expert, first slot), up to
// the next group's first slot; slot s reads row x_index[s] of x and writes out_rows[s].
void run_matvec(const at::Tensor &x2d, const std::vector<int64_t> &x_index, const std::vector<void *> &out_rows,
                const std::vector<std::pair<int64_t, int64_t>> &groups, const uint8_t *w, int64_t expert_bytes,
                int64_t qtype, int64_t N, int64_t K, int64_t row_bytes, const float *bias, OutKind kind,
                bool amx = false) {
#if defined(__x86_64__)
    const int span = gguf_mv_avx512bf16::offset_span(qtype);
    const bool offsets = span != 0;
    const MatvecX mx = matvec_x(x2d, span, amx);
    const size_t elem = amx ? 2 : 4;
    std::vector<const void *> xs(x_index.size());
    std::vector<const float *> sums(offsets ? x_index.size() : 0);
    for (size_t s = 0; s < x_index.size(); ++s) {
        xs[s] = static_cast<const char *>(mx.x.data_ptr()) + x_index[s] * K * elem;
        if (offsets) sums[s] = mx.sums.data_ptr<float>() + x_index[s] * (K / span);
    }
    std::vector<MatvecJob> jobs;
    for (size_t i = 0; i < groups.size(); ++i) {
        const auto [expert, first] = groups[i];
        const int64_t end = i + 1 < groups.size() ? groups[i + 1].second : int64_t(x_index.size());
        jobs.push_back({qtype, w + expert * expert_bytes, N, K, row_bytes, xs.data() + first,
                        offsets ? sums.data() + first : nullptr, end - first, bias, out_rows.data() + first, kind});
    }
    if (amx && int64_t(x_index.size()) <= kMatvecRows) {
        gguf_mv_avx512bf16::matvec_amx(jobs.data(), int64_t(jobs.size()));
    } else if (amx) {
        gguf_mv_avx512bf16::matmul_amx(jobs.data(), int64_t(jobs.size()));
    } else {
        gguf_mv_avx512bf16::matvec(jobs.data(), int64_t(jobs.size()));
    }
#else
    (void)x2d, (void)x_index, (void)out_rows, (void)groups, (void)w, (void)expert_bytes, (void)qtype, (void)N,
        (void)K, (void)row_bytes, (void)bias, (void)kind, (void)amx;
    TORCH_CHECK(false, "gguf_dequant: no mat-vec tier in this build");
#endif
}

OutKind out_kind(at::ScalarType dtype) {
    switch (dtype) {
        case at::kFloat: return OutKind::f32;
        case at::kHalf: return OutKind::f16;
        case at::kBFloat16: return OutKind::bf16;
        default: TORCH_CHECK_TYPE(false, "gguf_dequant: unsupported output dtype ", dtype);
    }
}

// (rows, K) x of any float dtype -> (rows, K rounded up to 16) float32, exact, zero-padded.
at::Tensor x_float32(const at::Tensor &x, int64_t k_padded) {
    if (x.scalar_type() == at::kFloat && x.is_contiguous() && x.size(1) == k_padded) return x;
    at::Tensor xf = at::zeros({x.size(0), k_padded}, x.options().dtype(at::kFloat));
    xf.narrow(1, 0, x.size(1)).copy_(x);
    return xf;
}

// The weights as the decode functions read them: contiguous and aligned for their half fields.
at::Tensor aligned_blocks(const at::Tensor &blocks, int64_t qtype) {
    TORCH_CHECK_VALUE(blocks.device().is_cpu(), "gguf_dequant (CPU build): blocks must be on the CPU, got ",
                      blocks.device());
    at::Tensor b = blocks.contiguous();
    if (reinterpret_cast<uintptr_t>(b.data_ptr()) % lookup_type(qtype).align != 0) b = b.clone();
    return b;
}

}  // namespace

void gguf_linear_out(const at::Tensor &x, const at::Tensor &blocks_in, int64_t qtype,
                     const std::optional<at::Tensor> &bias, at::Tensor &out) {
    const int64_t M = x.size(0), K = x.size(1), N = blocks_in.size(0);
    if (M == 0 || N == 0) return;
    const at::Tensor blocks = aligned_blocks(blocks_in, qtype);
    // M > 8 rows of bfloat16 x on AMX: the AMX tier (matrix tier's place; one order for every M > 8); M <= 8 rows
    // too on the types of the AMX mat-vec tier (the same order). K = 0 has no tiles to run (the AMX kernels would
    // leave their accumulators unwritten): the other tiers give bias or 0.
    const bool amx = K > 0 && x.scalar_type() == at::kBFloat16 && amx_tier(qtype, M);
    if ((M <= kMatvecRows || amx) && matvec_tier(qtype)) {
        std::vector<int64_t> x_index(M);
        std::vector<void *> out_rows(M);
        for (int64_t m = 0; m < M; ++m) {
            x_index[m] = m;
            out_rows[m] = static_cast<char *>(out.data_ptr()) + m * N * out.element_size();
        }
        run_matvec(x, x_index, out_rows, {{0, 0}}, blocks.data_ptr<uint8_t>(), 0, qtype, N, K, blocks.size(1),
                   bias ? bias->data_ptr<float>() : nullptr, out_kind(out.scalar_type()), amx);
        return;
    }
    const at::Tensor xf = x_float32(x, (K + 15) / 16 * 16);
    std::vector<const float *> x_rows(M);
    std::vector<void *> out_rows(M);
    for (int64_t m = 0; m < M; ++m) {
        x_rows[m] = xf.data_ptr<float>() + m * xf.size(1);
        out_rows[m] = static_cast<char *>(out.data_ptr()) + m * N * out.element_size();
    }
    const MatmulJob job{qtype, blocks.data_ptr<uint8_t>(), N, K, blocks.size(1), x_rows.data(), M,
                        bias ? bias->data_ptr<float>() : nullptr, out_rows.data(), out_kind(out.scalar_type())};
    run({job}, qtype);
}

void gguf_mul_mat_id_out(const at::Tensor &x, const at::Tensor &blocks_in, const at::Tensor &ids, int64_t qtype,
                         at::Tensor &out) {
    const int64_t T = ids.size(0), U = ids.size(1), Ux = x.size(1), K = x.size(2);
    const int64_t E = blocks_in.size(0), N = blocks_in.size(1), row_bytes = blocks_in.size(2);
    if (T * U == 0 || N == 0) return;
    const at::Tensor blocks = aligned_blocks(blocks_in, qtype);
    const int32_t *id = ids.data_ptr<int32_t>();
    // Slots grouped by expert (a counting sort): one job per expert that has any.
    std::vector<int64_t> start(E + 1, 0);
    for (int64_t s = 0; s < T * U; ++s) {
        TORCH_CHECK_INDEX(id[s] >= 0 && id[s] < E, "gguf_dequant.mul_mat_id: ids must be in [0, ", E, "), got ",
                          id[s]);
        ++start[id[s] + 1];
    }
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    if (matvec_tier(qtype)) {  // every slot alone: its bits do not depend on the other slots' routing
        std::vector<int64_t> x_index(T * U);
        std::vector<void *> out_rows(T * U);
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        for (int64_t s = 0; s < T * U; ++s) {
            const int64_t slot = fill[id[s]]++, t = s / U, u = s % U;
            x_index[slot] = t * Ux + u % Ux;
            out_rows[slot] = out.data_ptr<float>() + s * N;
        }
        std::vector<std::pair<int64_t, int64_t>> groups;
        for (int64_t e = 0; e < E; ++e) {
            if (start[e + 1] > start[e]) groups.push_back({e, start[e]});
        }
        run_matvec(x.reshape({T * Ux, K}), x_index, out_rows, groups, blocks.data_ptr<uint8_t>(), N * row_bytes,
                   qtype, N, K, row_bytes, nullptr, OutKind::f32);
        return;
    }
    const at::Tensor xf = x_float32(x.reshape({T * Ux, K}), (K + 15) / 16 * 16);
    std::vector<const float *> x_rows(T * U);
    std::vector<void *> out_rows(T * U);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t s = 0; s < T * U; ++s) {
        const int64_t slot = fill[id[s]]++, t = s / U, u = s % U;
        x_rows[slot] = xf.data_ptr<float>() + (t * Ux + u % Ux) * xf.size(1);
        out_rows[slot] = out.data_ptr<float>() + s * N;
    }
    std::vector<MatmulJob> jobs;
    for (int64_t e = 0; e < E; ++e) {
        if (start[e + 1] == start[e]) continue;
        jobs.push_back({qtype, blocks.data_ptr<uint8_t>() + e * N * row_bytes, N, K, row_bytes,
                        x_rows.data() + start[e], start[e + 1] - start[e], nullptr, out_rows.data() + start[e],
                        OutKind::f32});
    }
    run(jobs, qtype);
}
