// One instruction-set build of the fused matmul kernels: included by matmul_generic.cpp, matmul_avx2.cpp and
// matmul_avx512.cpp, each defining GGUF_MM_NS and GGUF_MM_ISA (0 baseline, 1 AVX2 + FMA, 2 AVX-512).
//
// Work: output features are taken NB at a time (a group; at::parallel_for splits the groups between threads,
// so one thread computes every dot product of a feature); rows of x MB at a time. For each chunk of KC
// columns the group's weights are decoded once into an L1 buffer by the per-type decode functions of
// metal/<type>.metal, then a register-tiled microkernel (MR rows x NR features) applies them to every row.
// Each output keeps 16 lane sums (element k goes to lane k mod 16, by a fused multiply-add, in increasing k)
// that live in memory between chunks, so the order of every operation on an output is the same whatever
// M, the row's position, the tiling or the thread count: results are batch-invariant and deterministic.
// Decode functions compile exactly as written (their products are exact, so a contraction into a fused
// multiply-add could not change a result, but nothing here depends on that); the FMAs of the dot products are
// explicit.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/Parallel.h>

#include "matmul_dispatch.h"

namespace GGUF_MM_NS {

// After every system and torch header: the metal_stdlib shim defines address-space words as macros.
#include "gguf_kernels.h"
#undef device
#undef thread
#undef threadgroup
#undef constant
#undef kernel

// 16 float32 lanes, with the three operations the order needs: load, fused multiply-add, lane sum.
#if GGUF_MM_ISA == 2
constexpr int MR = 4, NR = 4;  // 16 accumulators of 32 zmm registers
struct V16 {
    __m512 v;
};
inline V16 vzero() { return {_mm512_setzero_ps()}; }
inline V16 vload(const float *p) { return {_mm512_loadu_ps(p)}; }
inline void vstore(float *p, V16 a) { _mm512_storeu_ps(p, a.v); }
inline V16 vfma(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline float vsum(V16 a) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a.v),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
#elif GGUF_MM_ISA == 1
constexpr int MR = 2, NR = 2;  // 8 accumulators of 16 ymm registers (two per V16)
struct V16 {
    __m256 lo, hi;  // lanes 0-7, 8-15
};
inline V16 vzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline V16 vload(const float *p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void vstore(float *p, V16 a) {
    _mm256_storeu_ps(p, a.lo);
    _mm256_storeu_ps(p + 8, a.hi);
}
inline V16 vfma(V16 a, V16 b, V16 c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
inline float vsum(V16 a) {
    const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
#else
constexpr int MR = 2, NR = 2;
struct V16 {
    float v[16];
};
inline V16 vzero() { return V16{}; }
inline V16 vload(const float *p) {
    V16 a;
    std::memcpy(a.v, p, sizeof(a.v));
    return a;
}
inline void vstore(float *p, V16 a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline V16 vfma(V16 a, V16 b, V16 c) {
    for (int i = 0; i < 16; ++i) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return c;
}
inline float vsum(V16 a) {
    for (int h = 8; h >= 1; h /= 2) {
        for (int i = 0; i < h; ++i) a.v[i] = a.v[i] + a.v[i + h];
    }
    return a.v[0];
}
#endif

// Decodes elements [k0, k0 + kc) of one weight row into y (kc a multiple of 16; zeros past K).
using DecodeFn = void (*)(const uchar *row, int64_t K, int64_t k0, int64_t kc, float *y);

// Constant sub-block numbers (shifts and offsets fold) and restrict-qualified pointers (the output does not
// alias the block's bytes) let GCC vectorize the decode functions. They store straight into the group's buffer,
// which the microkernel reads only after the whole chunk is decoded (reading a just-written local array back
// in wider vectors than it was stored with stalls store forwarding).
template <typename Block, int SUB, void (*DEQUANTIZE)(const Block *, ushort, float *), int... S>
inline void decode_block(const Block *__restrict b, float *__restrict y, std::integer_sequence<int, S...>) {
    (DEQUANTIZE(b, ushort(S), y + S * SUB), ...);
}

template <typename Block, int QK, int SUB, void (*DEQUANTIZE)(const Block *, ushort, float *)>
void decode_quant(const uchar *__restrict row, int64_t, int64_t k0, int64_t kc, float *__restrict y) {
    // K is a multiple of QK and QK divides KC, so [k0, k0 + kc) is whole blocks.
    const Block *blocks = reinterpret_cast<const Block *>(row);
    for (int64_t i = k0 / QK; i < (k0 + kc) / QK; ++i) {
        decode_block<Block, SUB, DEQUANTIZE>(blocks + i, y + (i * QK - k0), std::make_integer_sequence<int, QK / SUB>());
    }
}

template <typename IN>
void decode_float(const uchar *row, int64_t K, int64_t k0, int64_t kc, float *y) {
    const IN *src = reinterpret_cast<const IN *>(row);
    const int64_t n = std::min(kc, K - k0);
    for (int64_t i = 0; i < n; ++i) y[i] = gguf_load(src + k0 + i);
    for (int64_t i = n; i < kc; ++i) y[i] = 0.0f;
}

DecodeFn decoder(int64_t qtype) {
    switch (qtype) {
        case 0: return decode_float<float>;
        case 1: return decode_float<metal::half>;
        case 30: return decode_float<metal::bfloat>;
#define GGUF_MM_CASE(ID, NAME, QK, BYTES, SUB) \
    case ID: return decode_quant<block_##NAME, QK, SUB, dequantize_##NAME>;
        GGUF_FOR_EACH_QUANT_TYPE(GGUF_MM_CASE)
#undef GGUF_MM_CASE
    }
    return nullptr;
}

// Rows [m, m + R) of x against NR decoded weight rows w (stride KC), columns [k0, k0 + kc): the lane sums
// acc[(r * NB + j) * 16 ...] of row r, feature j continue from memory and go back to it.
template <int R>
inline void microkernel(const float *const *x, int64_t k0, const float *w, int64_t ldw, int64_t kc,
                        float *acc, int64_t ld_acc) {
    V16 a[R][NR];
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NR; ++j) a[r][j] = vload(acc + r * ld_acc + 16 * j);
    for (int64_t c = 0; c < kc; c += 16) {
        V16 xv[R];
        for (int r = 0; r < R; ++r) xv[r] = vload(x[r] + k0 + c);
        for (int j = 0; j < NR; ++j) {
            const V16 wv = vload(w + j * ldw + c);
            for (int r = 0; r < R; ++r) a[r][j] = vfma(wv, xv[r], a[r][j]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NR; ++j) vstore(acc + r * ld_acc + 16 * j, a[r][j]);
}

template <int R = MR>
inline void microkernel_rows(int rows, const float *const *x, int64_t k0, const float *w, int64_t ldw, int64_t kc,
                             float *acc, int64_t ld_acc) {
    if constexpr (R > 1) {
        if (rows < R) return microkernel_rows<R - 1>(rows, x, k0, w, ldw, kc, acc, ld_acc);
    }
    microkernel<R>(x, k0, w, ldw, kc, acc, ld_acc);
}

inline void store_output(void *row, int64_t n, float y, OutKind kind) {
    switch (kind) {
        case OutKind::f32: static_cast<float *>(row)[n] = y; break;
        case OutKind::f16: static_cast<metal::half *>(row)[n] = metal::half(y); break;
        case OutKind::bf16: static_cast<metal::bfloat *>(row)[n] = metal::bfloat(y); break;
    }
}

// The bytes of columns [k0, k0 + kc) of a weight row, asked for while the current chunk is computed: with cold
// weights the hardware prefetchers alone leave the decode waiting on DRAM at each of the group's 16 rows.
inline void prefetch_chunk(const uchar *row, const MatmulJob &job, int64_t k0, int64_t kc) {
#if defined(__x86_64__)
    if (k0 >= job.K) return;
    const int64_t begin = k0 * job.row_bytes / job.K, end = std::min(job.row_bytes, (k0 + kc) * job.row_bytes / job.K);
    for (int64_t b = begin; b < end; b += 64) _mm_prefetch(reinterpret_cast<const char *>(row + b), _MM_HINT_T0);
#else
    (void)row, (void)job, (void)k0, (void)kc;
#endif
}

struct Tiling {
    int64_t NB, KC, MB;  // features per group, columns per chunk, rows per block
};

// KC is a multiple of every block size (256). Rows come MB at a time (the group's weights are decoded once
// per MB rows; the lane sums of a block take MB x NB x 64 bytes, 512 KiB at most). Only speed depends on these:
// the order of operations on each output does not.
inline Tiling tiling(int64_t M) {
    return M <= 16 ? Tiling{16, 256, 16} : Tiling{16, 512, 512};
}

// Features [n0, n0 + nb) of one job, with per-thread buffers ybuf (NB x KC) and acc (MB x NB x 16).
void run_group(const MatmulJob &job, DecodeFn decode, const Tiling &t, int64_t n0, float *ybuf, float *acc) {
    const int64_t nb = std::min(t.NB, job.N - n0);
    const int64_t nb_padded = (nb + NR - 1) / NR * NR;
    const int64_t kp = (job.K + 15) / 16 * 16;
    const int64_t ld_acc = t.NB * 16;
    for (int64_t j = nb; j < nb_padded; ++j) std::fill(ybuf + j * t.KC, ybuf + (j + 1) * t.KC, 0.0f);
    for (int64_t m0 = 0; m0 < job.M; m0 += t.MB) {
        const int64_t mb = std::min(t.MB, job.M - m0);
        std::fill(acc, acc + mb * ld_acc, 0.0f);
        for (int64_t k0 = 0; k0 < kp; k0 += t.KC) {
            const int64_t kc = std::min(t.KC, kp - k0);
            for (int64_t j = 0; j < nb; ++j) {
                const uchar *row = job.w + (n0 + j) * job.row_bytes;
                decode(row, job.K, k0, kc, ybuf + j * t.KC);
                prefetch_chunk(row, job, k0 + t.KC, t.KC);
            }
            // Rows outer: MR rows of x (MR x KC floats) stay in L1 while every feature of the group uses them.
            for (int64_t m = 0; m < mb; m += MR) {
                for (int64_t j = 0; j < nb_padded; j += NR) {
                    microkernel_rows(int(std::min<int64_t>(MR, mb - m)), job.x_rows + m0 + m, k0, ybuf + j * t.KC,
                                     t.KC, kc, acc + m * ld_acc + j * 16, ld_acc);
                }
            }
        }
        for (int64_t m = 0; m < mb; ++m) {
            for (int64_t j = 0; j < nb; ++j) {
                float y = vsum(vload(acc + m * ld_acc + j * 16));
                if (job.bias) y = y + job.bias[n0 + j];
                store_output(job.out_rows[m0 + m], n0 + j, y, job.out_kind);
            }
        }
    }
}

bool matmul(const MatmulJob *jobs, int64_t n_jobs) {
    // One index space over the groups of every job (mul_mat_id: one job per expert).
    std::vector<int64_t> first_group(n_jobs + 1, 0);
    std::vector<DecodeFn> decoders(n_jobs);
    std::vector<Tiling> tilings(n_jobs);
    for (int64_t i = 0; i < n_jobs; ++i) {
        decoders[i] = decoder(jobs[i].qtype);
        if (!decoders[i]) return false;
        tilings[i] = tiling(jobs[i].M);
        first_group[i + 1] = first_group[i] + (jobs[i].M > 0 ? (jobs[i].N + tilings[i].NB - 1) / tilings[i].NB : 0);
    }
    at::parallel_for(0, first_group[n_jobs], 1, [&](int64_t g0, int64_t g1) {
        std::vector<float> ybuf, acc;
        int64_t i = std::upper_bound(first_group.begin(), first_group.end(), g0) - first_group.begin() - 1;
        for (int64_t g = g0; g < g1; ++g) {
            while (g >= first_group[i + 1]) ++i;
            const Tiling &t = tilings[i];
            ybuf.resize(std::max<size_t>(ybuf.size(), t.NB * t.KC));
            acc.resize(std::max<size_t>(acc.size(), std::min(t.MB, jobs[i].M) * t.NB * 16));
            run_group(jobs[i], decoders[i], t, (g - first_group[i]) * t.NB, ybuf.data(), acc.data());
        }
    });
    return true;
}

}  // namespace GGUF_MM_NS
