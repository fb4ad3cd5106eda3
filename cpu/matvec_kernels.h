// The mat-vec tier of the CPU matmul (contract v2, README "Compute on packed weights"): rows of x one at a
// time through a fixed order, for M <= 8 rows (linear, mul_mat_vec) and every mul_mat_id slot, on the types
// with a factored form below, on CPUs with AVX-512 BW and AVX512-BF16. Included once, by matvec_avx512bf16.cpp.
//
// Factored form: a weight row is chunks of 32 elements (element 32g + j of chunk g); each type gives, per
// chunk, the 32 codes q (small integers, exact in bfloat16, mapped from their bit fields by one vpermw /
// vpermt2w table lookup), a scale vector a (lane i scales elements 2i and 2i + 1: one value for the chunk, or
// two for Q6_K's 16-element sub-blocks) and, for Q4_K and Q5_K, an offset b per chunk: w = a * q + b.
// Per output (row m, feature n), in this order:
//   P_g   = the 16 lane sums of q[2i] * x[2i] + q[2i + 1] * x[2i + 1] over chunk g:
//           bfloat16 x: vdpbf16ps from +0 (exact products, then +odd, +even; x below 2^-126 counts as zero and a
//           lane sum below 2^-126 flushes to zero);  float32 x: fma(q_odd, x_odd, q_even * x_even);
//   acc[g mod 2] = fma(P_g, a_g, acc[g mod 2]), both accumulators from +0, in increasing g;
//   ofs   = (offset types) 8 lanes, lane j mod 8 of chunk j: ofs = ofs - b_j * X_j, in increasing j, where X_j is
//           the sum of x over chunk j (lanes x[i] + x[16 + i], then lanes i + 8, i + 4, i + 2, i + 1), computed
//           once per call for each row of x and shared by every output feature;
//   y = sum16(acc[0] + acc[1]) (lanes i + 8, i + 4, i + 2, i + 1) [+ sum8(ofs) (i + 4, i + 2, i + 1)] [+ bias].
// Rows never share a sum, and threads split output features only: batch-invariant and deterministic.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#include <immintrin.h>

#include <ATen/Parallel.h>

#include "matmul_dispatch.h"

namespace gguf_mv_avx512bf16 {

// After every system and torch header: the metal_stdlib shim defines address-space words as macros.
#include "gguf_kernels.h"
#undef device
#undef thread
#undef threadgroup
#undef constant
#undef kernel


// 32 bfloat16 words: table[i] = bfloat16(values[i]) (exact: every value is an integer below 256 in magnitude).
template <typename V>
inline __m512i bf16_table(const V *values, int n) {
    alignas(64) uint16_t t[32] = {};
    for (int i = 0; i < n; ++i) t[i] = uint16_t(as_type<uint32_t>(float(int(values[i]))) >> 16);
    return _mm512_load_si512(t);
}

template <int OFFSET, int N>
struct IotaTable {
    int v[N];
    constexpr IotaTable() : v() {
        for (int i = 0; i < N; ++i) v[i] = i - OFFSET;
    }
};

// Half and E8M0 scales to float32 by table lookup (exact: every half and E8M0 value is a float32): a scalar load
// then a broadcast load, where the conversion instructions and register broadcasts would compete with the
// code lookups and dot products for the one shuffle port.
struct ScaleTables {
    float half[65536];
    float e8m0[256];
    ScaleTables() {
        for (uint32_t i = 0; i < 65536; ++i) half[i] = _cvtsh_ss(uint16_t(i));
        for (uint32_t e = 0; e < 256; ++e) e8m0[e] = e8m0_to_fp32_half(e);
    }
};

inline const ScaleTables &scale_tables() {
    static const ScaleTables t;
    return t;
}

// The code tables of a type: bfloat16 words indexed by a code's bit field (vpermw: lo; vpermt2w: lo, hi), and
// the scale tables.
struct Tables {
    __m512i lo, hi;
    const ScaleTables *scales;
};

// Keeps per-block scales in memory (the stack array just written): each chunk then takes its scale by a broadcast
// load instead of a register shuffle.
inline void scales_in_memory(const float *a) { asm volatile("" : : "r"(a) : "memory"); }

// 16 bytes: low nibbles as words 0-15, high nibbles as words 16-31 (Q4_0, IQ4_XS, MXFP4 element order).
inline __m512i nibbles_lo_hi(const uchar *q) {
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q)));
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(w, _mm256_set1_epi16(0xF))),
                              _mm256_srli_epi16(w, 4), 1);
}

// 32 bytes as 32 words.
inline __m512i widen32(const uchar *q) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(q)));
}

// Per block: the chunk scales a (and offsets b), ready for chunk_scale. Types with one chunk per block keep a
// in a register.
struct Q4_0 {
    using Block = block_q4_0;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
    static constexpr int SCALE_ELEMS = 32;  // one scale per chunk (amx_kernels.h)
    struct Scales {
        const float *a;
    };
    static Scales scales(const Block *b, const Tables &t) { return {t.scales->half + b->d.bits}; }
    static __m512 chunk_scale(const Scales &s, int) { return _mm512_set1_ps(*s.a); }
    static __m512i codes(const Block *b, int, const Tables &t) {
        return _mm512_permutexvar_epi16(nibbles_lo_hi(b->qs), t.lo);
    }
    static Tables tables() {
        static constexpr IotaTable<8, 16> v;  // q - 8
        return {bf16_table(v.v, 16), _mm512_setzero_si512(), &scale_tables()};
    }
};

struct Q8_0 {
    using Block = block_q8_0;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
    static constexpr int SCALE_ELEMS = 32;  // one scale per chunk (amx_kernels.h)
    struct Scales {
        const float *a;
    };
    static Scales scales(const Block *b, const Tables &t) { return {t.scales->half + b->d.bits}; }
    static __m512 chunk_scale(const Scales &s, int) { return _mm512_set1_ps(*s.a); }
    static __m512i codes(const Block *b, int, const Tables &) {
        const __m128i *q = reinterpret_cast<const __m128i *>(b->qs);
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q)));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1)));
        return __m512i(_mm512_cvtne2ps_pbh(hi, lo));  // exact: integers below 256 in magnitude
    }
    static Tables tables() { return {_mm512_setzero_si512(), _mm512_setzero_si512(), &scale_tables()}; }
};

// Q4_K and Q5_K: ggml's get_scale_min_k4 on 32-bit words (the same bit fields as gguf_scale_min_k4): sc[0..3] =
// s[0..3] & 63, m[0..3] = s[4..7] & 63, sc[4..7] = lo(s[8..11]) | (s[0..3] >> 6) << 4, m[4..7] = hi(s[8..11]) |
// (s[4..7] >> 6) << 4. a = d * sc, b = dmin * m (exact products of a half and a 6-bit integer).
struct KScales {
    alignas(32) float a[8];
    __m256 b;
};

inline __m256 bytes8_to_float(uint32_t lo, uint32_t hi) {
    const __m128i v = _mm_cvtsi64_si128(int64_t(uint64_t(lo) | uint64_t(hi) << 32));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

inline KScales k_scales(metal::half d, metal::half dmin, const uchar *s, const Tables &t) {
    uint32_t u[3];
    std::memcpy(u, s, 12);
    const uint32_t sc_lo = u[0] & 0x3f3f3f3fu, m_lo = u[1] & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
    const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
    KScales k;
    _mm256_store_ps(k.a, _mm256_mul_ps(_mm256_set1_ps(t.scales->half[d.bits]), bytes8_to_float(sc_lo, sc_hi)));
    k.b = _mm256_mul_ps(_mm256_set1_ps(t.scales->half[dmin.bits]), bytes8_to_float(m_lo, m_hi));
    scales_in_memory(k.a);
    return k;
}

// Q4_K and Q5_K chunk c: the low (c even) or high (c odd) nibbles of qs[32 (c / 2) ...], 16 bits each.
inline __m512i k_nibbles(const uchar *qs, int c) {
    const __m512i w = widen32(qs + 32 * (c / 2));
    return c % 2 ? _mm512_srli_epi16(w, 4) : _mm512_and_si512(w, _mm512_set1_epi16(0xF));
}

struct Q4_K {
    using Block = block_q4_k;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = true;
    static constexpr int SCALE_ELEMS = 32;  // one scale per chunk (amx_kernels.h)
    using Scales = KScales;
    static Scales scales(const Block *b, const Tables &t) { return k_scales(b->d, b->dmin, b->scales, t); }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    static __m512i codes(const Block *b, int c, const Tables &t) {
        return _mm512_permutexvar_epi16(k_nibbles(b->qs, c), t.lo);
    }
    static Tables tables() {
        static constexpr IotaTable<0, 32> v;
        return {bf16_table(v.v, 32), _mm512_setzero_si512(), &scale_tables()};
    }
};

struct Q5_K {
    using Block = block_q5_k;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = true;
    static constexpr int SCALE_ELEMS = 32;  // one scale per chunk (amx_kernels.h)
    using Scales = KScales;
    static Scales scales(const Block *b, const Tables &t) { return k_scales(b->d, b->dmin, b->scales, t); }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    // As Q4_K, plus bit c of qh[l] as the fifth bit of element l.
    static __m512i codes(const Block *b, int c, const Tables &t) {
        const __m512i q = k_nibbles(b->qs, c);
        const __mmask32 fifth = _mm512_test_epi16_mask(widen32(b->qh), _mm512_set1_epi16(int16_t(1 << c)));
        return _mm512_permutexvar_epi16(_mm512_mask_add_epi16(q, fifth, q, _mm512_set1_epi16(16)), t.lo);
    }
    static Tables tables() { return Q4_K::tables(); }
};

// Q6_K: chunk c = 4h + k is elements 128h + 32k + l (l < 32): low 4 bits from ql[64h + 32(k % 2) + l] (low
// nibble for k < 2, high for k >= 2), high 2 bits (qh[32h + l] >> 2k) & 3; q = that 6-bit value - 32. Its two
// 16-element sub-blocks 2c and 2c + 1 have scales d * scales[2c], d * scales[2c + 1] (lanes 0-7, 8-15).
struct Q6_K {
    using Block = block_q6_k;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    struct Scales {
        __m512 a;  // d * scales[i], i < 16
    };
    static Scales scales(const Block *b, const Tables &t) {
        const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b->scales));
        return {_mm512_mul_ps(_mm512_set1_ps(t.scales->half[b->d.bits]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(s)))};
    }
    static __m512 chunk_scale(const Scales &s, int c) {
        const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
        return _mm512_permutexvar_ps(idx, s.a);
    }
    static __m512i codes(const Block *b, int c, const Tables &t) {
        const int h = c / 4, k = c % 4;
        const __m512i w = widen32(b->ql + 64 * h + 32 * (k % 2));
        const __m512i lo = k < 2 ? _mm512_and_si512(w, _mm512_set1_epi16(0xF)) : _mm512_srli_epi16(w, 4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(widen32(b->qh + 32 * h), 2 * k), _mm512_set1_epi16(3));
        const __m512i q = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
        return _mm512_permutex2var_epi16(t.lo, q, t.hi);
    }
    static Tables tables() {
        static constexpr IotaTable<32, 64> v;
        return {bf16_table(v.v, 32), bf16_table(v.v + 32, 32), &scale_tables()};
    }
};

// IQ4_XS: group g (chunk g): ls = ((scales_l[g / 2] >> 4 (g % 2)) & 0xF) | ((scales_h >> 2g) & 3) << 4, that
// is bits 4g.. of the scales_l word; a = d * (ls - 32); codes kvalues_iq4nl[nibble] of qs[16g ...] (low
// nibbles: elements 0-15, high: 16-31).
struct IQ4_XS {
    using Block = block_iq4_xs;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    static constexpr int SCALE_ELEMS = 32;  // one scale per chunk (amx_kernels.h)
    struct Scales {
        alignas(32) float a[8];
    };
    static Scales scales(const Block *b, const Tables &t) {
        uint32_t sl;
        std::memcpy(&sl, b->scales_l, 4);
        const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(sl)),
                                                              _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                                            _mm256_set1_epi32(0xF));
        const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(b->scales_h)),
                                                              _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                            _mm256_set1_epi32(3));
        const __m256i ls = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
        Scales s;
        _mm256_store_ps(s.a, _mm256_mul_ps(_mm256_set1_ps(t.scales->half[b->d.bits]), _mm256_cvtepi32_ps(ls)));
        scales_in_memory(s.a);
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    static __m512i codes(const Block *b, int c, const Tables &t) {
        return _mm512_permutexvar_epi16(nibbles_lo_hi(b->qs + 16 * c), t.lo);
    }
    static Tables tables() { return {bf16_table(kvalues_iq4nl, 16), _mm512_setzero_si512(), &scale_tables()}; }
};

// MXFP4: a = the E8M0 scale as the decode function builds it (e8m0_to_fp32_half; subnormal for e < 2: see
// README), codes kvalues_fp4[nibble] (doubled E2M1 values), low nibbles elements 0-15, high 16-31.
struct MXFP4 {
    using Block = block_mxfp4;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
    static constexpr int SCALE_ELEMS = 32;  // one scale per chunk (amx_kernels.h)
    struct Scales {
        const float *a;
    };
    static Scales scales(const Block *b, const Tables &t) { return {t.scales->e8m0 + b->e}; }
    static __m512 chunk_scale(const Scales &s, int) { return _mm512_set1_ps(*s.a); }
    static __m512i codes(const Block *b, int, const Tables &t) {
        return _mm512_permutexvar_epi16(nibbles_lo_hi(b->qs), t.lo);
    }
    static Tables tables() { return {bf16_table(kvalues_fp4, 16), _mm512_setzero_si512(), &scale_tables()}; }
};

// The weight bytes PREFETCH_DISTANCE ahead of block b (the rows of a work item are consecutive): the hardware
// prefetchers alone leave this loop waiting on DRAM when the weights are cold.
constexpr int PREFETCH_DISTANCE = 2048;

template <typename B>
inline void prefetch_ahead(const B *b) {
    const char *p = reinterpret_cast<const char *>(b) + PREFETCH_DISTANCE;
    for (int off = 0; off < int(sizeof(B)); off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

inline float sum16(__m512 v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

inline float sum8(__m256 v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

// P_g for one row: bfloat16 x (32 values of chunk g) or float32 x (the chunk's 16 even then 16 odd values).
template <bool BF16>
inline __m512 chunk_dot(__m512i codes, const void *x, int64_t g) {
    if constexpr (BF16) {
        const __m512i xv = _mm512_loadu_si512(static_cast<const uint16_t *>(x) + 32 * g);
        return _mm512_dpbf16_ps(_mm512_setzero_ps(), __m512bh(codes), __m512bh(xv));
    } else {
        const float *xg = static_cast<const float *>(x) + 32 * g;
        const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(codes, 16));
        const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(codes, _mm512_set1_epi32(int(0xFFFF0000u))));
        return _mm512_fmadd_ps(odd, _mm512_loadu_ps(xg + 16), _mm512_mul_ps(even, _mm512_loadu_ps(xg)));
    }
}

inline void store_output(void *row, int64_t n, float y, OutKind kind) {
    switch (kind) {
        case OutKind::f32: static_cast<float *>(row)[n] = y; break;
        case OutKind::f16: static_cast<metal::half *>(row)[n] = metal::half(y); break;
        case OutKind::bf16: static_cast<metal::bfloat *>(row)[n] = metal::bfloat(y); break;
    }
}

// Feature n of R rows (x[r], sums[r], out[r]) of one job.
template <typename F, bool BF16, int R>
inline void rows_feature(const MatvecJob &job, int64_t n, const void *const *x, const float *const *sums,
                         void *const *out, const Tables &table) {
    const typename F::Block *blocks = reinterpret_cast<const typename F::Block *>(job.w + n * job.row_bytes);
    const int64_t n_blocks = job.K / F::QK;
    constexpr int G = F::CH == 1 ? 2 : 1;  // blocks per step: chunk g's accumulator g % 2 is a constant
    __m512 acc[R][2];
    __m256 ofs[R];
    for (int r = 0; r < R; ++r) {
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        ofs[r] = _mm256_setzero_ps();
    }
    for (int64_t i0 = 0; i0 < n_blocks; i0 += G) {
        for (int bb = 0; bb < G; ++bb) {
            const int64_t i = i0 + bb;
            if (G > 1 && i >= n_blocks) break;
            const typename F::Block *b = blocks + i;
            prefetch_ahead(b);
            const typename F::Scales s = F::scales(b, table);
            for (int c = 0; c < F::CH; ++c) {
                const __m512i q = F::codes(b, c, table);
                const __m512 a = F::chunk_scale(s, c);
                const int64_t g = i * F::CH + c;
                for (int r = 0; r < R; ++r) {
                    acc[r][(bb * F::CH + c) % 2] = _mm512_fmadd_ps(chunk_dot<BF16>(q, x[r], g), a,
                                                                   acc[r][(bb * F::CH + c) % 2]);
                }
            }
            if constexpr (F::OFFSET) {
                for (int r = 0; r < R; ++r) ofs[r] = _mm256_fnmadd_ps(s.b, _mm256_loadu_ps(sums[r] + 8 * i), ofs[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        float y = sum16(_mm512_add_ps(acc[r][0], acc[r][1]));
        if constexpr (F::OFFSET) y = y + sum8(ofs[r]);
        if (job.bias) y = y + job.bias[n];
        store_output(out[r], n, y, job.out_kind);
    }
}

template <typename F, bool BF16>
void feature(const MatvecJob &job, int64_t n, const Tables &table) {
    for (int64_t m = 0; m < job.M; m += 8) {
        const void *const *x = job.x_rows + m;
        const float *const *s = job.sum_rows ? job.sum_rows + m : nullptr;
        void *const *o = job.out_rows + m;
        switch (std::min<int64_t>(8, job.M - m)) {
            case 1: rows_feature<F, BF16, 1>(job, n, x, s, o, table); break;
            case 2: rows_feature<F, BF16, 2>(job, n, x, s, o, table); break;
            case 3: rows_feature<F, BF16, 3>(job, n, x, s, o, table); break;
            case 4: rows_feature<F, BF16, 4>(job, n, x, s, o, table); break;
            case 5: rows_feature<F, BF16, 5>(job, n, x, s, o, table); break;
            case 6: rows_feature<F, BF16, 6>(job, n, x, s, o, table); break;
            case 7: rows_feature<F, BF16, 7>(job, n, x, s, o, table); break;
            default: rows_feature<F, BF16, 8>(job, n, x, s, o, table); break;
        }
    }
}

using FeatureFn = void (*)(const MatvecJob &, int64_t, const Tables &);

template <typename F>
FeatureFn pick(bool bf16) {
    return bf16 ? feature<F, true> : feature<F, false>;
}

// The types with a factored form (type id, struct); the AMX tier (amx_kernels.h) takes the same list.
#define GGUF_MV_FACTORED_TYPES(X) \
    X(2, Q4_0)                    \
    X(8, Q8_0)                    \
    X(12, Q4_K)                   \
    X(13, Q5_K)                   \
    X(14, Q6_K)                   \
    X(23, IQ4_XS)                 \
    X(39, MXFP4)

inline bool factored(int64_t qtype, FeatureFn *fn, Tables *table, bool bf16) {
    switch (qtype) {
#define GGUF_MV_CASE(ID, T) \
    case ID:                 \
        if (fn) *fn = pick<T>(bf16), *table = T::tables(); \
        return true;
        GGUF_MV_FACTORED_TYPES(GGUF_MV_CASE)
#undef GGUF_MV_CASE
    }
    return false;
}

bool supports(int64_t qtype) { return factored(qtype, nullptr, nullptr, false); }

bool offsets(int64_t qtype) { return qtype == 12 || qtype == 13; }

void matvec(const MatvecJob *jobs, int64_t n_jobs) {
    constexpr int64_t FEATURES = 8;  // output features per work item
    std::vector<int64_t> first(n_jobs + 1, 0);
    std::vector<FeatureFn> fns(n_jobs);
    std::vector<Tables> tables(n_jobs);
    for (int64_t i = 0; i < n_jobs; ++i) {
        factored(jobs[i].qtype, &fns[i], &tables[i], jobs[i].x_bf16);
        first[i + 1] = first[i] + (jobs[i].N + FEATURES - 1) / FEATURES;
    }
    at::parallel_for(0, first[n_jobs], 1, [&](int64_t u0, int64_t u1) {
        int64_t i = std::upper_bound(first.begin(), first.end(), u0) - first.begin() - 1;
        for (int64_t u = u0; u < u1; ++u) {
            while (u >= first[i + 1]) ++i;
            const int64_t n0 = (u - first[i]) * FEATURES, n1 = std::min(jobs[i].N, n0 + FEATURES);
            for (int64_t n = n0; n < n1; ++n) fns[i](jobs[i], n, tables[i]);
        }
    });
}

}  // namespace gguf_mv_avx512bf16
