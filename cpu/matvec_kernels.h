// The mat-vec tier of the CPU matmul (contract v2, README "Compute on packed weights"): each row of x through a
// fixed order, for M <= 8 rows (linear, mul_mat_vec) and every mul_mat_id slot, on the types
// with a factored form below, on CPUs with AVX-512 BW and AVX512-BF16. Included once, by matvec_avx512bf16.cpp.
//
// Factored form: a weight row is chunks of 32 elements (element 32g + j of chunk g); each type gives, per
// chunk, the 32 codes q (small integers, exact in bfloat16, mapped from their bit fields by one vpermw /
// vpermt2w table lookup, or for the IQ grid types rows of a bfloat16 copy of the grid with signs applied by
// masks, IQ1_S and IQ1_M's with their delta applied), a scale vector a (lane i scales elements 2i and 2i + 1:
// one value for the chunk, or two for 16-element sub-blocks) and, for the offset types, an offset b per chunk
// (Q4_1, Q5_1, Q4_K, Q5_K) or per 16-element sub-block (Q2_K, OFFSET_SPAN = 16): w = a * q + b.
// Per output (row m, feature n), in this order (x float32: bfloat16 and float16 x are converted exactly, once per
// call):
//   w_g   = a_g * q_g, float32, exact (scale and code have at most 24 significant bits together, every type);
//   acc   = fma(w_g[2i + 1], x[2i + 1], fma(w_g[2i], x[2i], acc)) in lane i, over chunks g in increasing order,
//           from +0 (one accumulator: 2 * K / 32 roundings per lane);
//   ofs   = (offset types) 8 lanes, lane j mod 8 of chunk j: ofs = ofs - b_j * X_j, in increasing j, where X_j is
//           the sum of x over chunk j (lanes x[i] + x[16 + i], then lanes i + 8, i + 4, i + 2, i + 1), computed
//           once per call for each row of x and shared by every output feature; with OFFSET_SPAN = 16, 16
//           lanes, lane j mod 16 of sub-block j, X_j the sum over sub-block j (x[i] + x[8 + i], then i + 4,
//           i + 2, i + 1);
//   y = sum16(acc) (lanes i + 8, i + 4, i + 2, i + 1) [+ sum8(ofs) (i + 4, i + 2, i + 1), or sum16(ofs) with
//       OFFSET_SPAN = 16] [+ bias].
// Each chunk's w is decoded once and applied to every row (float32 FMAs: two per 32 weights and row, where a
// vdpbf16ps of the codes plus a scale FMA cost four times one FMA here).
// Rows never share a sum, and threads split output features only: batch-invariant and deterministic.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
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
    float ue4m3[256];  // NVFP4's scale bytes, as its decode function reads them
    ScaleTables() {
        for (uint32_t i = 0; i < 65536; ++i) half[i] = _cvtsh_ss(uint16_t(i));
        for (uint32_t e = 0; e < 256; ++e) e8m0[e] = e8m0_to_fp32_half(e);
        for (uint32_t e = 0; e < 256; ++e) ue4m3[e] = ue4m3_to_fp32_half(e);
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
    const uint16_t *grid = nullptr;  // IQ grid types: the grid's rows as bfloat16 words (BF16Grid)
};

// Chunk g's weights a * q as float32, exact (every type's scale times code has at most 24 significant bits):
// lane i of `even` is element 2i, lane i of `odd` element 2i + 1 (x's float32 layout, MatvecJob).
struct ChunkWeights {
    __m512 even, odd;
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

// As nibbles_lo_hi, from a broadcast load: byte j % 16 into word j (vpermb), then shifted right by 4 for j >= 16.
inline __m512i nibbles_lo_hi_vpermb(const uchar *q) {
    const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q)));
    const __m512i at = _mm512_set_epi64(0x0F0F0E0E0D0D0C0Cll, 0x0B0B0A0A09090808ll, 0x0707060605050404ll,
                                        0x0303020201010000ll, 0x0F0F0E0E0D0D0C0Cll, 0x0B0B0A0A09090808ll,
                                        0x0707060605050404ll, 0x0303020201010000ll);
    constexpr long long S = 0x0004000400040004ll;
    const __m512i shift = _mm512_set_epi64(S, S, S, S, 0, 0, 0, 0);
    return _mm512_and_si512(_mm512_srlv_epi16(_mm512_permutexvar_epi8(at, v), shift), _mm512_set1_epi16(0xF));
}

// Words 0-15 of a code table (bfloat16) as float32: loop-invariant, so computed once per call.
inline __m512 table_values16(__m512i lo) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(lo)), 16));
}

// The 16 bytes at q as nibble indices in x's float32 layout (MatvecJob): lane i of `even` holds element 2i's
// nibble in its low 4 bits, lane i of `odd` element 2i + 1's, for the Q4_0 element order (low nibbles elements
// 0-15, high 16-31); the bits above are left for vpermps, which reads 4.
struct NibbleIndices {
    __m512i even, odd;
};

inline NibbleIndices nibble_indices_lo_hi(const uchar *q) {
    // Lane i: the word qs[2 (i % 8)] | qs[2 (i % 8) + 1] << 8; lanes 8-15 take its high nibbles.
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q))));
    const __m512i at_even = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(4), 1);
    const __m512i at_odd = _mm512_inserti64x4(_mm512_set1_epi32(8), _mm256_set1_epi32(12), 1);
    return {_mm512_srlv_epi32(v, at_even), _mm512_srlv_epi32(v, at_odd)};
}

// A chunk's weights where its codes are nibble indices n into a 16-entry table (words 0-15 of lo): a float32
// table of a * those values (16 exact products, one multiply), then two vpermps, where codes() and the scale cost
// a table lookup, a split into even and odd elements and two multiplies.
inline ChunkWeights nibble_table_weights(NibbleIndices n, __m512 a, __m512i lo) {
    const __m512 scaled = _mm512_mul_ps(a, table_values16(lo));
    return {_mm512_permutexvar_ps(n.even, scaled), _mm512_permutexvar_ps(n.odd, scaled)};
}

// The same for the nibbles at q in the Q4_0 element order.
inline ChunkWeights nibble_table_weights(const uchar *q, __m512 a, __m512i lo) {
    return nibble_table_weights(nibble_indices_lo_hi(q), a, lo);
}

// 32 bytes as 32 words.
inline __m512i widen32(const uchar *q) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(q)));
}

// Lanes 0-7 of chunk c: lane 2c of v (sub-block 2c's scale); lanes 8-15: lane 2c + 1 (sub-block 2c + 1).
inline __m512 pair_scale(__m512 v, int c) {
    const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
    return _mm512_permutexvar_ps(idx, v);
}

// Per block: the chunk scales a (and offsets b), ready for chunk_scale. Types with one chunk per block keep a
// in a register.

// The types whose every chunk takes the block's f16 scale (a = d): a pointer into the half table, so each chunk's
// scale is one broadcast load.
struct DScale {
    const float *a;
};

struct DScaled {
    using Scales = DScale;
    template <typename B>
    static Scales scales(const B *b, const Tables &t) { return {t.scales->half + b->d.bits}; }
    static __m512 chunk_scale(const Scales &s, int) { return _mm512_set1_ps(*s.a); }
};

// One-chunk types whose codes are the 16 bytes at qs as indices into the 16-entry table lo in the Q4_0 element
// order, a the block's one scale (Scales::a): Q4_0, Q4_1, IQ4_NL. MXFP4 spells them out: inherited, they change
// GCC's code for its AMX mat-vec loop (amx_matvec.h's work_item).
struct NibbleCodes {
    template <typename B>
    static __m512i codes(const B *b, int, const Tables &t) {
        return _mm512_permutexvar_epi16(nibbles_lo_hi(b->qs), t.lo);
    }
    template <typename B, typename S>
    static ChunkWeights weights(const B *b, int, const Tables &t, const S &s) {
        return nibble_table_weights(b->qs, _mm512_set1_ps(*s.a), t.lo);
    }
};

struct Q4_0 : DScaled, NibbleCodes {
    using Block = block_q4_0;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
    static Tables tables() {
        static constexpr IotaTable<8, 16> v;  // q - 8
        return {bf16_table(v.v, 16), _mm512_setzero_si512(), &scale_tables()};
    }
};

struct Q8_0 : DScaled {
    using Block = block_q8_0;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
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

// The 16 words at q widened to 32 bits: lane i holds q[2i] (bits 0-7) and q[2i + 1] (bits 8-15).
inline __m512i word_pairs(const uchar *q) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(q)));
}

// Q4_K chunk c as nibble indices (NibbleIndices): lane i of the 16 words at qs[32 (c / 2)] widened to 32 bits
// holds elements 2i (bits 0-7) and 2i + 1 (bits 8-15); chunk c takes the low (c even) or high nibbles, so one
// widening serves chunks c and c + 1. vpermps reads bits 0-3 of an index: a byte shift (shuffle port) brings
// bits 8-15 down, and only the high nibbles take a shift on the port of the multiplies and FMAs.
inline NibbleIndices k_nibble_indices(const uchar *qs, int c) {
    const __m512i v = word_pairs(qs + 32 * (c / 2));
    const __m512i odd = _mm512_bsrli_epi128(v, 1);
    if (c % 2 == 0) return {v, odd};
    return {_mm512_srli_epi32(v, 4), _mm512_srli_epi32(odd, 4)};
}

// Q4_K and Q5_K's shared fields: k_scales, codes 0..31.
template <typename B>
struct KQuant {
    using Block = B;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = true;
    using Scales = KScales;
    static Scales scales(const Block *b, const Tables &t) { return k_scales(b->d, b->dmin, b->scales, t); }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    static Tables tables() {
        static constexpr IotaTable<0, 32> v;
        return {bf16_table(v.v, 32), _mm512_setzero_si512(), &scale_tables()};
    }
};

struct Q4_K : KQuant<block_q4_k> {
    static __m512i codes(const Block *b, int c, const Tables &t) {
        return _mm512_permutexvar_epi16(k_nibbles(b->qs, c), t.lo);
    }
    // The table a * {0..15} (one multiply), then two vpermps: where codes() cost a vpermw, the even/odd split
    // and two multiplies.
    static ChunkWeights weights(const Block *b, int c, const Tables &t, const Scales &s) {
        return nibble_table_weights(k_nibble_indices(b->qs, c), _mm512_set1_ps(s.a[c]), t.lo);
    }
};

struct Q5_K : KQuant<block_q5_k> {
    // As Q4_K, plus bit c of qh[l] as the fifth bit of element l.
    static __m512i codes(const Block *b, int c, const Tables &t) {
        const __m512i q = k_nibbles(b->qs, c);
        const __mmask32 fifth = _mm512_test_epi16_mask(widen32(b->qh), _mm512_set1_epi16(int16_t(1 << c)));
        return _mm512_permutexvar_epi16(_mm512_mask_add_epi16(q, fifth, q, _mm512_set1_epi16(16)), t.lo);
    }
    // The tables a * {0..15} and a * {16..31} (two multiplies), the index nibble + 16 * bit (the bit moved from
    // qh by one shift and merged by one ternary logic) for both elements of lane i, then two vpermt2ps.
    static ChunkWeights weights(const Block *b, int c, const Tables &t, const Scales &s) {
        const __m512 a = _mm512_set1_ps(s.a[c]);
        const __m512 lo = _mm512_mul_ps(a, table_values16(t.lo));
        const __m512 hi = _mm512_mul_ps(a, table_values16(_mm512_shuffle_i64x2(t.lo, t.lo, 0xEE)));
        // Lane i: qs[2i] (element 2i) in bits 0-7 and qs[2i + 1] in bits 8-15, qh[2i] and qh[2i + 1] alike.
        const __m512i v = word_pairs(b->qs + 32 * (c / 2));
        const __m512i h = word_pairs(b->qh);
        const __m512i fifth = c < 4 ? _mm512_slli_epi32(h, 4 - c) : _mm512_srli_epi32(h, c - 4);  // bit c to 4, 12
        // Bits 0-3 and 8-11 the nibbles, bits 4 and 12 the fifth bits (vpermt2ps reads bits 0-4).
        const __m512i u = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0x0F0F), c % 2 ? _mm512_srli_epi32(v, 4) : v,
                                                    fifth, 0xCA);  // mask ? nibbles : fifth, bitwise
        return {_mm512_permutex2var_ps(lo, u, hi), _mm512_permutex2var_ps(lo, _mm512_bsrli_epi128(u, 1), hi)};
    }
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
    static __m512 chunk_scale(const Scales &s, int c) { return pair_scale(s.a, c); }
    static __m512i codes(const Block *b, int c, const Tables &t) {
        const int h = c / 4, k = c % 4;
        const __m512i w = widen32(b->ql + 64 * h + 32 * (k % 2));
        const __m512i lo = k < 2 ? _mm512_and_si512(w, _mm512_set1_epi16(0xF)) : _mm512_srli_epi16(w, 4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(widen32(b->qh + 32 * h), 2 * k), _mm512_set1_epi16(3));
        const __m512i q = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
        return _mm512_permutex2var_epi16(t.lo, q, t.hi);
    }
    // The 6-bit codes q as float32 without a table: 2^23 + q is the float with bits 0x4B000000 | q, and
    // subtracting 2^23 + 32 leaves q - 32 (exact), where codes() cost a vpermt2w, a shift and a mask.
    static ChunkWeights weights(const Block *b, int c, const Tables &, const Scales &s) {
        const int h = c / 4, k = c % 4;
        // Lane i: element 2i's bits in bits 0-7, element 2i + 1's in bits 8-15.
        const __m512i w = word_pairs(b->ql + 64 * h + 32 * (k % 2));
        const __m512i qh = word_pairs(b->qh + 32 * h);
        const __m512i hi = k < 2 ? _mm512_slli_epi32(qh, 4 - 2 * k) : k == 2 ? qh : _mm512_srli_epi32(qh, 2);
        // Bits 0-3 and 8-11 the low bits of the codes, bits 4-5 and 12-13 their high bits (the rest: junk).
        const __m512i q = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0x0F0F), k < 2 ? w : _mm512_srli_epi32(w, 4), hi, 0xCA);
        const __m512i six = _mm512_set1_epi32(0x3F), magic = _mm512_set1_epi32(0x4B000000);
        const __m512 bias = _mm512_set1_ps(8388608.0f + 32.0f);
        const __m512 even = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_ternarylogic_epi32(q, six, magic, 0xEA)), bias);
        const __m512 odd = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_bsrli_epi128(q, 1), six, magic, 0xEA)), bias);
        const __m512 a = pair_scale(s.a, c);
        return {_mm512_mul_ps(a, even), _mm512_mul_ps(a, odd)};
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
    static ChunkWeights weights(const Block *b, int c, const Tables &t, const Scales &s) {
        return nibble_table_weights(b->qs + 16 * c, _mm512_set1_ps(s.a[c]), t.lo);
    }
    static Tables tables() { return {bf16_table(kvalues_iq4nl, 16), _mm512_setzero_si512(), &scale_tables()}; }
};

// MXFP4: a = the E8M0 scale as the decode function builds it (e8m0_to_fp32_half; subnormal for e < 2: see
// README), codes kvalues_fp4[nibble] (doubled E2M1 values), low nibbles elements 0-15, high 16-31.
struct MXFP4 {
    using Block = block_mxfp4;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
    struct Scales {
        const float *a;
    };
    static Scales scales(const Block *b, const Tables &t) { return {t.scales->e8m0 + b->e}; }
    static __m512 chunk_scale(const Scales &s, int) { return _mm512_set1_ps(*s.a); }
    static __m512i codes(const Block *b, int, const Tables &t) {
        return _mm512_permutexvar_epi16(nibbles_lo_hi(b->qs), t.lo);
    }
    static ChunkWeights weights(const Block *b, int, const Tables &t, const Scales &s) {
        return nibble_table_weights(b->qs, _mm512_set1_ps(*s.a), t.lo);
    }
    static Tables tables() { return {bf16_table(kvalues_fp4, 16), _mm512_setzero_si512(), &scale_tables()}; }
};

// 2-bit codes of chunk c = 4h + g of a Q2_K / Q3_K / TQ2_0 block: (qs[32h + l] >> 2g) & 3, 16 bits each.
inline __m512i k_crumbs(const uchar *qs, int c) {
    return _mm512_and_si512(_mm512_srli_epi16(widen32(qs + 32 * (c / 4)), 2 * (c % 4)), _mm512_set1_epi16(3));
}

// Chunks of 16-element sub-blocks and codes of up to 3 bits (Q2_K, Q3_K): a 16-entry float32 table, entries
// 8j + idx = a_(2c + j) * value(idx) (the two sub-blocks' scales, pair_scale, times the code values: one
// multiply), and per lane an index: the code bits (`bits` of idx: elements 2i and 2i + 1 in bits 0-2 and
// 8-10) with bits 3 and 11 set in lanes 8-15 (elements 16-31: sub-block 2c + 1); two vpermps, the odd index by
// a byte shift. Where codes() cost a vpermw, the even/odd split and two multiplies.
inline ChunkWeights sub_block_table_weights(__m512i idx, int bits, __m512 scale, __m512 values) {
    const __m512i half = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(0x0808), 1);
    const __m512i i = _mm512_ternarylogic_epi32(idx, _mm512_set1_epi32(bits), half, 0xEA);  // (idx & bits) | half
    const __m512 table = _mm512_mul_ps(scale, values);
    return {_mm512_permutexvar_ps(i, table), _mm512_permutexvar_ps(_mm512_bsrli_epi128(i, 1), table)};
}

// Q3_K: chunk c = 4h + g: low 2 bits k_crumbs, high bit bit c of hmask[l]; q = low2 - 4 + 4 * high (table index
// low2 + 4 * high). Scale of sub-block i: d * (sc_i - 32), sc_i 6 bits: low 4 from scales[i % 8] (low nibble for
// i < 8, high for i >= 8), high 2 from (scales[8 + i % 4] >> 2 (i / 4)) & 3.
struct Q3_K {
    using Block = block_q3_k;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    struct Scales {
        __m512 a;  // sub-block i's scale, i < 16
    };
    static Scales scales(const Block *b, const Tables &t) {
        uint64_t lo;
        uint32_t hi;
        std::memcpy(&lo, b->scales, 8);
        std::memcpy(&hi, b->scales + 8, 4);
        const uint64_t h0 = uint64_t(hi & 0x03030303u) | uint64_t((hi >> 2) & 0x03030303u) << 32;
        const uint64_t h1 = uint64_t((hi >> 4) & 0x03030303u) | uint64_t((hi >> 6) & 0x03030303u) << 32;
        const uint64_t s0 = (lo & 0x0F0F0F0F0F0F0F0Full) | h0 << 4, s1 = ((lo >> 4) & 0x0F0F0F0F0F0F0F0Full) | h1 << 4;
        const __m512i sc = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_set_epi64x(int64_t(s1), int64_t(s0))),
                                            _mm512_set1_epi32(32));
        return {_mm512_mul_ps(_mm512_set1_ps(t.scales->half[b->d.bits]), _mm512_cvtepi32_ps(sc))};
    }
    static __m512 chunk_scale(const Scales &s, int c) { return pair_scale(s.a, c); }
    static __m512i codes(const Block *b, int c, const Tables &t) {
        const __m512i low = k_crumbs(b->qs, c);
        const __mmask32 high = _mm512_test_epi16_mask(widen32(b->hmask), _mm512_set1_epi16(int16_t(1 << c)));
        return _mm512_permutexvar_epi16(_mm512_mask_add_epi16(low, high, low, _mm512_set1_epi16(4)), t.lo);
    }
    static ChunkWeights weights(const Block *b, int c, const Tables &, const Scales &s) {
        const int g = c % 4;
        const __m512i low = _mm512_srli_epi32(word_pairs(b->qs + 32 * (c / 4)), 2 * g);
        const __m512i h = word_pairs(b->hmask);
        const __m512i high = c < 2 ? _mm512_slli_epi32(h, 2 - c) : _mm512_srli_epi32(h, c - 2);  // bit c to 2, 10
        const __m512i idx = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0x0303), low, high, 0xCA);  // bits 0-1 from low
        const __m512 values = _mm512_setr_ps(-4, -3, -2, -1, 0, 1, 2, 3, -4, -3, -2, -1, 0, 1, 2, 3);
        return sub_block_table_weights(idx, 0x0707, pair_scale(s.a, c), values);
    }
    static Tables tables() {
        static constexpr IotaTable<4, 8> v;
        return {bf16_table(v.v, 8), _mm512_setzero_si512(), &scale_tables()};
    }
};

// Q2_K: codes k_crumbs (0..3); sub-block i: a = d * lo(scales[i]), offset -dmin * hi(scales[i]) (exact
// products), one per 16 elements (OFFSET_SPAN).
struct Q2_K {
    using Block = block_q2_k;
    static constexpr int QK = 256, CH = 8, OFFSET_SPAN = 16;
    static constexpr bool OFFSET = true;
    struct Scales {
        __m512 a, b;  // sub-block i's scale and subtracted offset, i < 16
    };
    static Scales scales(const Block *b, const Tables &t) {
        const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->scales)));
        return {_mm512_mul_ps(_mm512_set1_ps(t.scales->half[b->d.bits]),
                              _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(0xF)))),
                _mm512_mul_ps(_mm512_set1_ps(t.scales->half[b->dmin.bits]), _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)))};
    }
    static __m512 chunk_scale(const Scales &s, int c) { return pair_scale(s.a, c); }
    static __m512i codes(const Block *b, int c, const Tables &t) { return _mm512_permutexvar_epi16(k_crumbs(b->qs, c), t.lo); }
    static ChunkWeights weights(const Block *b, int c, const Tables &, const Scales &s) {
        const __m512i idx = _mm512_srli_epi32(word_pairs(b->qs + 32 * (c / 4)), 2 * (c % 4));
        const __m512 values = _mm512_setr_ps(0, 1, 2, 3, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0);
        return sub_block_table_weights(idx, 0x0303, pair_scale(s.a, c), values);
    }
    static Tables tables() {
        static constexpr IotaTable<0, 4> v;
        return {bf16_table(v.v, 4), _mm512_setzero_si512(), &scale_tables()};
    }
};

// TQ2_0: codes k_crumbs - 1, one scale d.
struct TQ2_0 : DScaled {
    using Block = block_tq2_0;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    static __m512i codes(const Block *b, int c, const Tables &t) { return _mm512_permutexvar_epi16(k_crumbs(b->qs, c), t.lo); }
    static Tables tables() {
        static constexpr IotaTable<1, 4> v;
        return {bf16_table(v.v, 4), _mm512_setzero_si512(), &scale_tables()};
    }
};

// The 32-element legacy types: 4-bit codes as Q4_0 (Q5_0, Q5_1: plus bit j of the little-endian qh as the fifth
// bit of element j), a = d; Q4_1 and Q5_1 add m (one offset per chunk).
template <typename B>
inline __m512i fifth_bit(const B *b, __m512i q) {
    uint32_t qh;
    std::memcpy(&qh, b->qh, 4);
    return _mm512_mask_add_epi16(q, qh, q, _mm512_set1_epi16(16));
}

// Q4_1, Q5_1: the subtracted offsets (-m) of blocks b[0..7] (lanes past `live` zero), from their m fields.
template <typename B>
inline __m256 minus_m8(const B *b, __mmask8 live) {
    const __m256i at = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(sizeof(B))));
    const char *m = reinterpret_cast<const char *>(&b->m);  // 32 bits read from each m: m and the next field
    const __m256i bits = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), live, at, m, 1);
    return _mm256_xor_ps(_mm256_cvtph_ps(_mm256_cvtepi32_epi16(bits)), _mm256_set1_ps(-0.0f));
}

template <typename B, int FIRST, int COUNT>
struct Legacy : DScaled {
    using Block = B;
    static constexpr int QK = 32, CH = 1;
    static Tables tables() {
        static constexpr IotaTable<-FIRST, COUNT> v;
        return {bf16_table(v.v, COUNT), _mm512_setzero_si512(), &scale_tables()};
    }
};

struct Q4_1 : Legacy<block_q4_1, 0, 16>, NibbleCodes {
    static constexpr bool OFFSET = true;
    static __m256 offsets8(const Block *b, __mmask8 live) { return minus_m8(b, live); }
};

struct Q5_0 : Legacy<block_q5_0, -16, 32> {
    static constexpr bool OFFSET = false;
    static __m512i codes(const Block *b, int, const Tables &t) {
        return _mm512_permutexvar_epi16(fifth_bit(b, nibbles_lo_hi(b->qs)), t.lo);
    }
};

struct Q5_1 : Legacy<block_q5_1, 0, 32> {
    static constexpr bool OFFSET = true;
    static __m256 offsets8(const Block *b, __mmask8 live) { return minus_m8(b, live); }
    static __m512i codes(const Block *b, int, const Tables &t) {
        return _mm512_permutexvar_epi16(fifth_bit(b, nibbles_lo_hi_vpermb(b->qs)), t.lo);
    }
};

// IQ4_NL: weights by nibble_table_weights (codes() stays for the AMX tier).
struct IQ4_NL : DScaled, NibbleCodes {
    using Block = block_iq4_nl;
    static constexpr int QK = 32, CH = 1;
    static constexpr bool OFFSET = false;
    static Tables tables() { return {bf16_table(kvalues_iq4nl, 16), _mm512_setzero_si512(), &scale_tables()}; }
};

// The IQ grid types: codes are grid values (small positive integers) with signs; the grids are copied once into
// bfloat16 words (exact), so a chunk's codes are 4 rows of 8 (IQ2) or 8 rows of 4 (IQ3) loads, and the signs one
// mask: bit j set negates element j (flips the bfloat16 sign bit).
template <int ROWS, int W>
struct BF16Grid {
    alignas(64) uint16_t v[ROWS][W];
    template <typename E>
    explicit BF16Grid(const E (&grid)[ROWS][W]) {
        for (int r = 0; r < ROWS; ++r) {
            for (int j = 0; j < W; ++j) v[r][j] = uint16_t(as_type<uint32_t>(float(grid[r][j])) >> 16);
        }
    }
};

template <typename E, int ROWS, int W>
inline Tables grid_tables(const E (&grid)[ROWS][W]) {
    static const BF16Grid<ROWS, W> g(grid);  // one per grid: each grid_tables instantiation sees one array type
    Tables t{_mm512_setzero_si512(), _mm512_setzero_si512(), &scale_tables()};
    t.grid = &g.v[0][0];
    return t;
}

// The 32 2-bit fields of 8 bytes, LSB first: word j = (p[j / 4] >> 2 (j % 4)) & 3 (Q2_0 codes, IQ2_S row bits).
inline __m512i crumbs32(const uchar *p) {
    const __m256i each4 = _mm256_shuffle_epi8(
        _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))),
        _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7));
    const __m512i shifts = _mm512_set4_epi32(0x00060004, 0x00020000, 0x00060004, 0x00020000);
    return _mm512_and_si512(_mm512_srlv_epi16(_mm512_cvtepu8_epi16(each4), shifts), _mm512_set1_epi16(3));
}

// The rows at byte offsets o0..o3 (16 per row) of an 8-wide bfloat16 grid: elements 0-7, 8-15, 16-23, 24-31.
inline __m512i grid_rows8(const uint16_t *grid, uint32_t o0, uint32_t o1, uint32_t o2, uint32_t o3) {
    const char *base = reinterpret_cast<const char *>(grid);
    const auto row = [base](uint32_t o) { return _mm_load_si128(reinterpret_cast<const __m128i *>(base + o)); };
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(row(o0)), row(o1), 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(row(o2)), row(o3), 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Rows idx[0..7] (64-bit lanes) of a 4-wide bfloat16 grid.
inline __m512i grid_rows4(const uint16_t *grid, __m512i idx) { return _mm512_i64gather_epi64(idx, grid, 8); }

// Adding 0x8000 to a bfloat16 word flips its sign bit: one masked add.
inline __m512i with_signs(__m512i codes, __mmask32 negative) {
    return _mm512_mask_add_epi16(codes, negative, codes, _mm512_set1_epi16(int16_t(0x8000)));
}

// The sign masks of a block's 8 chunks: chunk c's 4 ksigns_iq2xs indices are the 7-bit fields of 64-bit lane c of
// `words` at bit offsets `at` (bytes 0-3 of each lane); signs[c] is ksigns_iq2xs of them as one 32-bit mask (one
// vpermt2b on the 128-byte table, which reads 7 bits of each index byte).
struct Signs8 {
    alignas(64) uint64_t m[8];
    __mmask32 chunk(int c) const { return __mmask32(m[c]); }
};

inline void ksigns8(Signs8 &out, __m512i words, uint32_t at) {
    const __m512i idx = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(int64_t(at)), words);
    _mm512_store_si512(out.m, _mm512_permutex2var_epi8(_mm512_loadu_si512(ksigns_iq2xs), idx,
                                                       _mm512_loadu_si512(ksigns_iq2xs + 64)));
    scales_in_memory(reinterpret_cast<const float *>(out.m));
}

// db = d * (0.5 + ls) * SCALE of 8 4-bit ls (IQ2_XXS, IQ3_XXS: one per chunk), in the decode functions' order.
inline void iq_db8(float *a, float d, __m256 ls, float scale) {
    _mm256_store_ps(a, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(d), _mm256_add_ps(_mm256_set1_ps(0.5f), ls)),
                                     _mm256_set1_ps(scale)));
    scales_in_memory(a);
}

// IQ2_XS, IQ2_S: scales[g] low nibble for sub-block 2g, high for 2g + 1: db = d * (0.5 + s) * 0.25.
inline __m512 iq2_db16(float d, const uchar *scales) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(scales));
    const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0xF)), hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0xF));
    const __m512 ls = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(d), _mm512_add_ps(_mm512_set1_ps(0.5f), ls)), _mm512_set1_ps(0.25f));
}

struct ChunkScales8 {
    alignas(32) float a[8];
};

struct SignedChunkScales8 {  // IQ2_XXS
    alignas(32) float a[8];
    Signs8 signs;
};

// ksigns_iq2xs of four 7-bit indices (bits 7l..7l+6 of s) as one 32-bit mask, in scalar registers (IQ3_XXS: its
// gathered grid rows would wait on the stores of Signs8).
inline __mmask32 ksigns32(uint32_t s) {
    const uint32_t v = _pdep_u32(s, 0x7F7F7F7Fu);
    uint32_t p = v ^ (v >> 4);
    p ^= p >> 2;
    p ^= p >> 1;
    return v | (p & 0x01010101u) << 7;
}

// A block's 32 grid rows (IQ2_XS, IQ2_S) as byte offsets into the bfloat16 grid, computed with vector
// instructions once per block: each row then costs one scalar load.
struct RowOffsets32 {
    alignas(64) uint16_t o[32];
    void set(__m512i rows) {
        _mm512_store_si512(o, _mm512_slli_epi16(rows, 4));
        scales_in_memory(reinterpret_cast<const float *>(o));
    }
};

struct IQ2Scales16 {  // IQ2_XS, IQ2_S
    __m512 a;  // sub-block i's scale, i < 16
    RowOffsets32 rows;
    Signs8 signs;  // IQ2_XS
};

// IQ2_XXS: chunk g is the u64 at qs[4g]: bytes 0-3 index rows, bits 32-59 hold 4 ksigns indices, 60-63 ls.
struct IQ2_XXS {
    using Block = block_iq2_xxs;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    using Scales = SignedChunkScales8;
    static Scales scales(const Block *b, const Tables &t) {
        Scales s;
        const __m512i w = _mm512_loadu_si512(b->qs);
        iq_db8(s.a, t.scales->half[b->d.bits], _mm512_cvtepi64_ps(_mm512_srli_epi64(w, 60)), 0.25f);
        ksigns8(s.signs, w, 0x35'2E'27'20u);  // bits 32, 39, 46, 53
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    static __m512i codes(const Block *b, int c, const Tables &t, const Scales &s) {
        const uchar *r = reinterpret_cast<const uchar *>(b->qs + 4 * c);
        return with_signs(grid_rows8(t.grid, r[0] * 16u, r[1] * 16u, r[2] * 16u, r[3] * 16u), s.signs.chunk(c));
    }
    static Tables tables() { return grid_tables(iq2xxs_grid); }
};

// IQ2_XS: chunk g is 4 u16 words qs[4g + l]: bits 0-8 index a row, 9-15 a ksigns entry.
struct IQ2_XS {
    using Block = block_iq2_xs;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    using Scales = IQ2Scales16;
    static Scales scales(const Block *b, const Tables &t) {
        Scales s;
        s.a = iq2_db16(t.scales->half[b->d.bits], b->scales);
        const __m512i w = _mm512_loadu_si512(b->qs);
        s.rows.set(_mm512_and_si512(w, _mm512_set1_epi16(511)));
        ksigns8(s.signs, w, 0x39'29'19'09u);  // bits 9, 25, 41, 57
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return pair_scale(s.a, c); }
    static __m512i codes(const Block *b, int c, const Tables &t, const Scales &s) {
        const uint16_t *o = s.rows.o + 4 * c;
        return with_signs(grid_rows8(t.grid, o[0], o[1], o[2], o[3]), s.signs.chunk(c));
    }
    static Tables tables() { return grid_tables(iq2xs_grid); }
};

// IQ2_S: row l of chunk g: qs[4g + l] | ((qh[g] >> 2l) & 3) << 8; signs: the u32 at qs[32 + 4g].
struct IQ2_S {
    using Block = block_iq2_s;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    using Scales = IQ2Scales16;
    static Scales scales(const Block *b, const Tables &t) {
        Scales s;
        s.a = iq2_db16(t.scales->half[b->d.bits], b->scales);
        // Row 4g + l: qs[4g + l] | ((qh[g] >> 2l) & 3) << 8.
        s.rows.set(_mm512_or_si512(widen32(b->qs), _mm512_slli_epi16(crumbs32(b->qh), 8)));
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return pair_scale(s.a, c); }
    static __m512i codes(const Block *b, int c, const Tables &t, const Scales &s) {
        const uint16_t *o = s.rows.o + 4 * c;
        uint32_t signs;  // 4 bytes at offset 34 + 4c of an 82-byte block: unaligned, so memcpy, not a mask load
        std::memcpy(&signs, b->qs + 32 + 4 * c, 4);
        return with_signs(grid_rows8(t.grid, o[0], o[1], o[2], o[3]), __mmask32(signs));
    }
    static Tables tables() { return grid_tables(iq2s_grid); }
};

// IQ3_XXS: chunk g: rows qs[8g + k]; the u32 at qs[64 + 4g] holds 4 ksigns indices and ls (bits 28-31).
struct IQ3_XXS {
    using Block = block_iq3_xxs;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    using Scales = ChunkScales8;
    static Scales scales(const Block *b, const Tables &t) {
        Scales s;
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b->qs + 64));
        iq_db8(s.a, t.scales->half[b->d.bits], _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 28)), 0.5f);
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    static __m512i codes(const Block *b, int c, const Tables &t) {
        uint32_t sw;
        std::memcpy(&sw, b->qs + 64 + 4 * c, 4);
        const __m512i idx = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(b->qs + 8 * c)));
        return with_signs(grid_rows4(t.grid, idx), ksigns32(sw));
    }
    static Tables tables() { return grid_tables(iq3xxs_grid); }
};

// IQ3_S: chunk g: rows qs[8g + k] | bit k of qh[g] << 8 (bit 8g + k of the little-endian u64 qh); signs: the u32
// at signs[4g]; db = d * (1 + 2s), s the nibble g of the u32 scales. A block's 64 row indices are widened to
// 32 bits once (4 instructions), so each chunk's gather takes its indices by one load.
struct IQ3SScales {
    alignas(32) float a[8];
    alignas(64) uint32_t rows[64];
};

struct IQ3_S {
    using Block = block_iq3_s;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    using Scales = IQ3SScales;
    static Scales scales(const Block *b, const Tables &t) {
        uint32_t sc;
        std::memcpy(&sc, b->scales, 4);
        // 1 + 2s by a table lookup on the nibble (vpermps reads the low 4 bits of each lane).
        const __m256i s = _mm256_srlv_epi32(_mm256_set1_epi32(int(sc)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
        const __m512 odd = _mm512_permutexvar_ps(_mm512_castsi256_si512(s), _mm512_setr_ps(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21,
                                                                                          23, 25, 27, 29, 31));
        Scales r;
        _mm256_store_ps(r.a, _mm256_mul_ps(_mm256_set1_ps(t.scales->half[b->d.bits]), _mm512_castps512_ps256(odd)));
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
            uint16_t high;  // bits 16q.. of qh, as a mask loaded from memory
            std::memcpy(&high, b->qh + 2 * q, 2);
            const __m512i low = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs + 16 * q)));
            _mm512_store_si512(r.rows + 16 * q, _mm512_mask_or_epi32(low, __mmask16(high), low, _mm512_set1_epi32(256)));
        }
        scales_in_memory(r.a);
        return r;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
    static __m512i codes(const Block *b, int c, const Tables &t, const Scales &s) {
        uint32_t signs;
        std::memcpy(&signs, b->signs + 4 * c, 4);
        const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i *>(s.rows + 8 * c));
        return with_signs(_mm512_i32gather_epi64(idx, t.grid, 8), signs);
    }
    static Tables tables() { return grid_tables(iq3s_grid); }
};

// Q1_0: chunk c is the bits of the u32 at qs[4c]: q = +1 where set, -1 where clear; a = d.
struct Q1_0 : DScaled {
    using Block = block_q1_0;
    static constexpr int QK = 128, CH = 4;
    static constexpr bool OFFSET = false;
    static __m512i codes(const Block *b, int c, const Tables &) {
        uint32_t bits;
        std::memcpy(&bits, b->qs + 4 * c, 4);
        return _mm512_mask_blend_epi16(bits, _mm512_set1_epi16(int16_t(0xBF80)), _mm512_set1_epi16(0x3F80));
    }
    static Tables tables() { return {_mm512_setzero_si512(), _mm512_setzero_si512(), &scale_tables()}; }
};

// Q2_0: chunk c: element j is (qs[8c + j / 4] >> 2 (j % 4)) & 3, q = that - 1; a = d.
struct Q2_0 : DScaled {
    using Block = block_q2_0;
    static constexpr int QK = 64, CH = 2;
    static constexpr bool OFFSET = false;
    static __m512i codes(const Block *b, int c, const Tables &t) { return _mm512_permutexvar_epi16(crumbs32(b->qs + 8 * c), t.lo); }
    static Tables tables() {
        static constexpr IotaTable<1, 4> v;
        return {bf16_table(v.v, 4), _mm512_setzero_si512(), &scale_tables()};
    }
};

// NVFP4: chunk c is sub-blocks 2c and 2c + 1, bytes qs[16c ...]: elements 0-7 the low nibbles of bytes 0-7, 8-15
// their high nibbles, 16-23 and 24-31 the same of bytes 8-15; codes kvalues_fp4 (doubled E2M1 values), a = the
// UE4M3 scale as the decode function builds it (halved).
struct NVFP4 {
    using Block = block_nvfp4;
    static constexpr int QK = 64, CH = 2;
    static constexpr bool OFFSET = false;
    struct Scales {
        const float *ue4m3;  // ScaleTables::ue4m3
        uint32_t d;          // the block's 4 scale bytes
    };
    static Scales scales(const Block *b, const Tables &t) {
        Scales s{t.scales->ue4m3, 0};
        std::memcpy(&s.d, b->d, 4);
        return s;
    }
    // Lanes 0-7: sub-block 2c's scale, 8-15: 2c + 1's; two broadcast loads from the table (the second merged).
    static __m512 chunk_scale(const Scales &s, int c) {
        const __m512 lo = _mm512_set1_ps(s.ue4m3[(s.d >> 16 * c) & 0xFF]);
        return _mm512_mask_broadcastss_ps(lo, 0xFF00, _mm_load_ss(s.ue4m3 + ((s.d >> (16 * c + 8)) & 0xFF)));
    }
    // Byte (j / 16) 8 + j % 8 of the chunk into word j (vpermb), shifted right by 4 for the high nibbles; vpermw
    // reads 5 bits of each word and the table holds kvalues_fp4 twice, so bit 4 need not be cleared.
    static __m512i codes(const Block *b, int c, const Tables &t) {
        const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs + 16 * c)));
        const __m512i at = _mm512_set_epi64(0x0F0F0E0E0D0D0C0Cll, 0x0B0B0A0A09090808ll, 0x0F0F0E0E0D0D0C0Cll,
                                            0x0B0B0A0A09090808ll, 0x0707060605050404ll, 0x0303020201010000ll,
                                            0x0707060605050404ll, 0x0303020201010000ll);
        constexpr long long S = 0x0004000400040004ll;
        const __m512i shift = _mm512_set_epi64(S, S, 0, 0, S, S, 0, 0);
        return _mm512_permutexvar_epi16(_mm512_srlv_epi16(_mm512_permutexvar_epi8(at, q), shift), t.lo);
    }
    static Tables tables() {
        int v[32];
        for (int k = 0; k < 32; ++k) v[k] = kvalues_fp4[k % 16];
        return {bf16_table(v, 32), _mm512_setzero_si512(), &scale_tables()};
    }
};

// IQ1_S, IQ1_M: w = dl * (grid + delta), grid -1/0/1, delta = -1/8 or +1/8 per row of 8 (IQ1_S: per chunk), is
// (dl / 8) * (8 grid + 8 delta) rounded once (the same real product): a = dl / 8 (exact), codes 8 grid +- 1.
// The codes come from a bfloat16 copy of iq1s_grid with the delta applied, one row per (delta sign, grid row):
// row n + 2048 s holds 8 grid[n] + 1 (s = 0) or 8 grid[n] - 1 (s = 1), so a row of 8 codes is one 16-byte load
// (64 KiB: the table lives in L2, which the row loads of a chunk overlap).
struct IQ1Rows {
    alignas(64) uint16_t v[2][2048][8];
    IQ1Rows() {
        for (int neg = 0; neg < 2; ++neg) {
            for (int r = 0; r < 2048; ++r) {
                for (int j = 0; j < 8; ++j) {
                    const float q = float(8 * int(iq1s_grid[r][j]) + (neg ? -1 : 1));
                    v[neg][r][j] = uint16_t(as_type<uint32_t>(q) >> 16);
                }
            }
        }
    }
};

inline Tables iq1_tables() {
    static const IQ1Rows rows;
    Tables t{_mm512_setzero_si512(), _mm512_setzero_si512(), &scale_tables()};
    t.grid = &rows.v[0][0][0];
    return t;
}

// A block's rows (IQ1Rows indices n + 2048 s) as byte offsets, and its scales.
struct IQ1SScales {
    alignas(32) float a[8];  // chunk g's dl / 8
    RowOffsets32 rows;
};

struct IQ1MScales {
    __m512 a;  // sub-block j's dl / 8, j < 16
    RowOffsets32 rows;
};

inline __m512i iq1_chunk_codes(const Tables &t, const RowOffsets32 &rows, int c) {
    const uint16_t *o = rows.o + 4 * c;
    return grid_rows8(t.grid, o[0], o[1], o[2], o[3]);
}

// IQ1_S and IQ1_M's shared fields: chunk c's codes are the IQ1Rows rows at the block's row offsets.
template <typename B, typename S>
struct IQ1Grid {
    using Block = B;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    using Scales = S;
    static __m512i codes(const Block *, int c, const Tables &t, const Scales &s) { return iq1_chunk_codes(t, s.rows, c); }
    static Tables tables() { return iq1_tables(); }
};

// IQ1_S: chunk g, h = qh[g]: rows qs[4g + l] | ((h >> 3l) & 7) << 8, dl = d * (2 ((h >> 12) & 7) + 1), bit 15 of h
// the chunk's delta sign.
struct IQ1_S : IQ1Grid<block_iq1_s, IQ1SScales> {
    static Scales scales(const Block *b, const Tables &t) {
        const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qh));
        const __m256i h = _mm256_cvtepu16_epi32(qh);
        const __m256i odd = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 11), _mm256_set1_epi32(14)),
                                             _mm256_set1_epi32(1));
        const __m256 dl = _mm256_mul_ps(_mm256_set1_ps(t.scales->half[b->d.bits]), _mm256_cvtepi32_ps(odd));
        Scales s;
        _mm256_store_ps(s.a, _mm256_mul_ps(dl, _mm256_set1_ps(0.125f)));
        scales_in_memory(s.a);
        // Word 4g + l: qs[4g + l] | ((h >> 3l) & 7) << 8 | (h >> 15) << 11, h = qh[g].
        const __m512i each = _mm512_permutexvar_epi16(
            _mm512_set_epi16(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4,
                             3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
            _mm512_castsi128_si512(qh));
        const __m512i high = _mm512_slli_epi16(
            _mm512_and_si512(_mm512_srlv_epi16(each, _mm512_set4_epi32(0x00090006, 0x00030000, 0x00090006, 0x00030000)),
                             _mm512_set1_epi16(7)),
            8);
        const __m512i sign = _mm512_and_si512(_mm512_srli_epi16(each, 4), _mm512_set1_epi16(0x0800));
        s.rows.set(_mm512_ternarylogic_epi32(widen32(b->qs), high, sign, 0xFE));  // a | b | c
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return _mm512_set1_ps(s.a[c]); }
};

// IQ1_M: d is the half of the top nibbles of the 4 u16 scale words sc[0..3]; sub-block j: dl = d * (2 ((sc[j / 4]
// >> 3 (j % 4)) & 7) + 1). Chunk g, row l: n = nibble l of the u16 at qh[2g]: row qs[4g + l] | (n & 7) << 8, n & 8
// the row's delta sign (so qs[4g + l] | n << 8 is the IQ1Rows index).
struct IQ1_M : IQ1Grid<block_iq1_m, IQ1MScales> {
    static Scales scales(const Block *b, const Tables &t) {
        uint64_t sc;
        std::memcpy(&sc, b->scales, 8);
        const uint16_t dbits = uint16_t(_pext_u64(sc, 0xF000F000F000F000ull));
        const __m512i words = _mm512_cvtepu16_epi32(_mm256_castsi128_si256(_mm_cvtsi64_si128(int64_t(sc))));
        const __m512i each = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), words);
        const __m512i s3 = _mm512_and_si512(_mm512_srlv_epi32(each, _mm512_set4_epi32(9, 6, 3, 0)), _mm512_set1_epi32(7));
        const __m512 odd = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(s3, 1), _mm512_set1_epi32(1)));
        Scales s;
        s.a = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(t.scales->half[dbits]), odd), _mm512_set1_ps(0.125f));
        // Word j: qs[j] | n_j << 8, n_j = nibble j % 2 of qh[j / 2]: that byte into the high byte of word j, then
        // shifted right by 4 for odd j.
        const __m512i qh = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qh)));
        const __m512i at = _mm512_set_epi64(0x0F000F000E000E00ll, 0x0D000D000C000C00ll, 0x0B000B000A000A00ll,
                                            0x0900090008000800ll, 0x0700070006000600ll, 0x0500050004000400ll,
                                            0x0300030002000200ll, 0x0100010000000000ll);
        const __m512i n = _mm512_srlv_epi16(_mm512_permutexvar_epi8(at, qh), _mm512_set1_epi32(0x00040000));
        s.rows.set(_mm512_ternarylogic_epi32(n, widen32(b->qs), _mm512_set1_epi16(0x0F00), 0xEC));  // (a & c) | b
        return s;
    }
    static __m512 chunk_scale(const Scales &s, int c) { return pair_scale(s.a, c); }
};

// TQ1_0: base-3 digits, digit n of byte x = (((x * 3^n) & 0xFF) * 3) >> 8, q = digit - 1, a = d. Chunk c < 5: digit
// c of qs[0..31]; c = 5, 6: digits 2(c - 5) and 2(c - 5) + 1 of qs[32..47]; c = 7: digit 4 of qs[32..47], then
// word 16 + 4n + m = digit n of qh[m].
struct TQ1_0 : DScaled {
    using Block = block_tq1_0;
    static constexpr int QK = 256, CH = 8;
    static constexpr bool OFFSET = false;
    static __m512i codes(const Block *b, int c, const Tables &t) {
        constexpr int16_t pow3[5] = {1, 3, 9, 27, 81};
        __m512i x, pow;
        if (c < 5) {
            x = widen32(b->qs);
            pow = _mm512_set1_epi16(pow3[c]);
        } else {
            const __m256i tail = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs + 32)));
            if (c < 7) {
                x = _mm512_inserti64x4(_mm512_castsi256_si512(tail), tail, 1);
                pow = _mm512_inserti64x4(_mm512_set1_epi16(pow3[2 * (c - 5)]), _mm256_set1_epi16(pow3[2 * (c - 5) + 1]), 1);
            } else {
                uint32_t qh;
                std::memcpy(&qh, b->qh, 4);
                x = _mm512_inserti64x4(_mm512_castsi256_si512(tail), _mm256_cvtepu8_epi16(_mm_set1_epi32(int(qh))), 1);
                pow = _mm512_inserti64x4(_mm512_set1_epi16(81), _mm256_setr_epi16(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27), 1);
            }
        }
        const __m512i frac = _mm512_and_si512(_mm512_mullo_epi16(x, pow), _mm512_set1_epi16(0xFF));
        return _mm512_permutexvar_epi16(_mm512_srli_epi16(_mm512_mullo_epi16(frac, _mm512_set1_epi16(3)), 8), t.lo);
    }
    static Tables tables() {
        static constexpr IotaTable<1, 3> v;
        return {bf16_table(v.v, 3), _mm512_setzero_si512(), &scale_tables()};
    }
};

// The weight bytes `distance` ahead of block b (the rows of a work item are consecutive): the hardware
// prefetchers alone leave this loop waiting on DRAM when the weights are cold.
constexpr int PREFETCH_DISTANCE = 2048;

template <typename B>
inline void prefetch_ahead(const B *b, int64_t distance = PREFETCH_DISTANCE) {
    const char *p = reinterpret_cast<const char *>(b) + distance;
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

inline ChunkWeights chunk_weights(__m512i codes, __m512 a) {
    const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(codes, 16));
    const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(codes, _mm512_set1_epi32(int(0xFFFF0000u))));
    return {_mm512_mul_ps(a, even), _mm512_mul_ps(a, odd)};
}

inline void store_output(void *row, int64_t n, float y, OutKind kind) {
    switch (kind) {
        case OutKind::f32: static_cast<float *>(row)[n] = y; break;
        case OutKind::f16: static_cast<metal::half *>(row)[n] = metal::half(y); break;
        case OutKind::bf16: static_cast<metal::bfloat *>(row)[n] = metal::bfloat(y); break;
    }
}

// Elements per offset: 0 without offsets, else 32 (one per chunk) or the type's OFFSET_SPAN.
template <typename F>
constexpr int offset_span() {
    if constexpr (!F::OFFSET) return 0;
    else if constexpr (requires { F::OFFSET_SPAN; }) return F::OFFSET_SPAN;
    else return 32;
}

// Chunk c's codes: from the block's Scales where the type takes some of its code bits there (sign masks).
template <typename F>
inline __m512i chunk_codes(const typename F::Block *b, int c, const Tables &t, const typename F::Scales &s) {
    if constexpr (requires { F::codes(b, c, t, s); }) return F::codes(b, c, t, s);
    else return F::codes(b, c, t);
}

// Chunk c's weights: the type's own float32 decode where it has one (weights()), else its codes times its scale.
template <typename F>
inline ChunkWeights decode_chunk(const typename F::Block *b, int c, const Tables &t, const typename F::Scales &s) {
    if constexpr (requires { F::weights(b, c, t, s); }) return F::weights(b, c, t, s);
    else return chunk_weights(chunk_codes<F>(b, c, t, s), F::chunk_scale(s, c));
}

constexpr int64_t FEATURES = 8;  // output features per work item

// Elements of K per pass over a work item's features: R rows of float32 x (16 KB) stay in L1 from feature to
// feature; one pass (all of K) for 1 or 2 rows.
template <int R>
constexpr int64_t pass_elems() {
    return R <= 2 ? int64_t(1) << 40 : R <= 4 ? 1024 : 512;
}

// One feature's running sums for R rows, carried from pass to pass.
template <int R>
struct FeatureSums {
    alignas(64) float acc[R][16];
    alignas(64) float ofs[R][16];  // SPAN 32: lane j mod 8 of chunk j; SPAN 16: lane j mod 16 of sub-block j
};

// Blocks [i0, i1) of features n0 .. n0 + NF - 1 (sums fs[0 .. NF - 1]) for R rows (x[r], sums[r]): each chunk's
// weights are decoded once and applied to every row; the features only interleave (each one's sums are its own).
template <typename F, int R, int NF>
inline void rows_features(const MatvecJob &job, int64_t n0, int64_t i0, int64_t i1, const float *const *x,
                          const float *const *sums, FeatureSums<R> *fs, int64_t ahead, const Tables &table) {
    using Block = typename F::Block;
    constexpr int SPAN = offset_span<F>();
    const Block *rows[NF];
    __m512 acc[R][NF];
#pragma GCC unroll 8
    for (int f = 0; f < NF; ++f) {
        rows[f] = reinterpret_cast<const Block *>(job.w + (n0 + f) * job.row_bytes);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][f] = _mm512_load_ps(fs[f].acc[r]);
    }
    for (int64_t i = i0; i < i1; ++i) {
        typename F::Scales s[NF];
#pragma GCC unroll 8
        for (int f = 0; f < NF; ++f) {
            prefetch_ahead(rows[f] + i, ahead);
            // Built in place: an assignment copies the struct (GCC moves IQ row offsets word by word).
            ::new (&s[f]) typename F::Scales(F::scales(rows[f] + i, table));
        }
#pragma GCC unroll 8
        for (int c = 0; c < F::CH; ++c) {
            const int64_t g = i * F::CH + c;
            ChunkWeights w[NF];
#pragma GCC unroll 8
            for (int f = 0; f < NF; ++f) w[f] = decode_chunk<F>(rows[f] + i, c, table, s[f]);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
                __m512 even = _mm512_loadu_ps(x[r] + 32 * g), odd = _mm512_loadu_ps(x[r] + 32 * g + 16);
                // In registers, loaded once for the NF features: GCC otherwise folds the load into each feature's
                // FMA, and at R = 8 the x loads, not the FMAs, then bound the loop (7-15% at M = 8).
                if constexpr (NF > 1) __asm__("" : "+v"(even), "+v"(odd));
#pragma GCC unroll 8
                for (int f = 0; f < NF; ++f) {
                    acc[r][f] = _mm512_fmadd_ps(w[f].odd, odd, _mm512_fmadd_ps(w[f].even, even, acc[r][f]));
                }
            }
        }
        if constexpr (SPAN == 16) {
            static_assert(F::QK == 256);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
                const __m512 xs = _mm512_loadu_ps(sums[r] + 16 * i);
#pragma GCC unroll 8
                for (int f = 0; f < NF; ++f) {
                    float *o = fs[f].ofs[r];
                    _mm512_store_ps(o, _mm512_fnmadd_ps(s[f].b, xs, _mm512_load_ps(o)));
                }
            }
        } else if constexpr (SPAN == 32 && F::CH == 8) {
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
                const __m256 xs = _mm256_loadu_ps(sums[r] + 8 * i);
#pragma GCC unroll 8
                for (int f = 0; f < NF; ++f) {
                    float *o = fs[f].ofs[r];
                    _mm256_store_ps(o, _mm256_fnmadd_ps(s[f].b, xs, _mm256_load_ps(o)));
                }
            }
        }
    }
    if constexpr (SPAN == 32 && F::CH == 1) {
        // One-chunk blocks: offsets 8 blocks at a time from their fields (the rows are in L1 by now; i0 is a
        // multiple of 8); lanes past the last block add -(0 * 0), which changes no sum.
        for (int64_t i = i0; i < i1; i += 8) {
            const __mmask8 live = __mmask8(i1 - i >= 8 ? 0xFF : (1u << (i1 - i)) - 1);
            for (int f = 0; f < NF; ++f) {
                const __m256 bv = F::offsets8(rows[f] + i, live);
                for (int r = 0; r < R; ++r) {
                    const __m256 xs = _mm256_maskz_loadu_ps(live, sums[r] + i);
                    float *o = fs[f].ofs[r];
                    _mm256_store_ps(o, _mm256_fnmadd_ps(bv, xs, _mm256_load_ps(o)));
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int f = 0; f < NF; ++f) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) _mm512_store_ps(fs[f].acc[r], acc[r][f]);
    }
}

// Features [n0, n1) (at most FEATURES) of R rows: passes of pass_elems<R>() elements of K over all of them, NF
// features at a time (enough independent sums to hide the FMA latency at small R, few enough to keep R * NF
// accumulators in registers), the rest one at a time.
template <typename F, int R>
inline void rows_range(const MatvecJob &job, int64_t n0, int64_t n1, const float *const *x, const float *const *s,
                       void *const *o, const Tables &table) {
    constexpr int NF = R <= 2 ? 4 : 2;
    constexpr int SPAN = offset_span<F>();
    constexpr int64_t PASS_BLOCKS = std::max<int64_t>(1, pass_elems<R>() / F::QK);
    static_assert(F::CH > 1 || PASS_BLOCKS % 8 == 0);
    FeatureSums<R> fs[FEATURES] = {};
    const int64_t n_blocks = job.K / F::QK;
    // Prefetch the same bytes of the rows that come next: the next NF features in one pass, else the next work
    // item's (all rows of a group advance together, so bytes ahead in a row are being read already).
    const int64_t ahead = (PASS_BLOCKS >= n_blocks ? NF : FEATURES) * job.row_bytes;
    for (int64_t i0 = 0; i0 < n_blocks; i0 += PASS_BLOCKS) {
        const int64_t i1 = std::min(n_blocks, i0 + PASS_BLOCKS);
        int64_t n = n0;
        for (; n + NF <= n1; n += NF) rows_features<F, R, NF>(job, n, i0, i1, x, s, fs + (n - n0), ahead, table);
        for (; n < n1; ++n) rows_features<F, R, 1>(job, n, i0, i1, x, s, fs + (n - n0), ahead, table);
    }
    for (int64_t n = n0; n < n1; ++n) {
        const FeatureSums<R> &f = fs[n - n0];
        for (int r = 0; r < R; ++r) {
            float y = sum16(_mm512_load_ps(f.acc[r]));
            if constexpr (SPAN == 16) y = y + sum16(_mm512_load_ps(f.ofs[r]));
            if constexpr (SPAN == 32) y = y + sum8(_mm256_load_ps(f.ofs[r]));
            if (job.bias) y = y + job.bias[n];
            store_output(o[r], n, y, job.out_kind);
        }
    }
}

template <typename F>
void features(const MatvecJob &job, int64_t n0, int64_t n1, const Tables &table) {
    for (int64_t m = 0; m < job.M; m += 8) {
        const float *const *x = reinterpret_cast<const float *const *>(job.x_rows + m);
        const float *const *s = job.sum_rows ? job.sum_rows + m : nullptr;
        void *const *o = job.out_rows + m;
        switch (std::min<int64_t>(8, job.M - m)) {
            case 1: rows_range<F, 1>(job, n0, n1, x, s, o, table); break;
            case 2: rows_range<F, 2>(job, n0, n1, x, s, o, table); break;
            case 3: rows_range<F, 3>(job, n0, n1, x, s, o, table); break;
            case 4: rows_range<F, 4>(job, n0, n1, x, s, o, table); break;
            case 5: rows_range<F, 5>(job, n0, n1, x, s, o, table); break;
            case 6: rows_range<F, 6>(job, n0, n1, x, s, o, table); break;
            case 7: rows_range<F, 7>(job, n0, n1, x, s, o, table); break;
            default: rows_range<F, 8>(job, n0, n1, x, s, o, table); break;
        }
    }
}

using FeaturesFn = void (*)(const MatvecJob &, int64_t, int64_t, const Tables &);

// A list of type structs, and each struct's GGUF type id: its block's, from the generated list of types
// (gguf_types.h), so no id is written twice.
template <typename... Ts>
struct Types {};

template <typename B>
constexpr int block_type_id = -1;
#define GGUF_MV_BLOCK_ID(ID, NAME, QK, BYTES, SUB) \
    template <> constexpr int block_type_id<block_##NAME> = ID;
GGUF_FOR_EACH_QUANT_TYPE(GGUF_MV_BLOCK_ID)
#undef GGUF_MV_BLOCK_ID

template <typename F>
constexpr int type_id = block_type_id<typename F::Block>;

// Calls fn(std::type_identity<T>{}) for the struct T of the list whose type id is qtype; false if none is. The
// one way the tiers map a run-time type id to their per-type functions.
template <typename... Ts, typename Fn>
inline bool with_type(int64_t qtype, Types<Ts...>, Fn &&fn) {
    static_assert(((type_id<Ts> >= 0) && ...), "a type struct whose Block is not in gguf_types.h");
    return ((qtype == type_id<Ts> && (fn(std::type_identity<Ts>{}), true)) || ...);
}

// Every type with a factored kernel.
using MatvecTypes = Types<Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S,
                          IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0>;

inline bool factored(int64_t qtype, FeaturesFn *fn, Tables *table) {
    return with_type(qtype, MatvecTypes{}, [&]<typename T>(std::type_identity<T>) {
        if (fn) *fn = features<T>, *table = T::tables();
    });
}

bool supports(int64_t qtype) { return factored(qtype, nullptr, nullptr); }

int offset_span(int64_t qtype) {
    int span = 0;
    with_type(qtype, MatvecTypes{}, [&]<typename T>(std::type_identity<T>) { span = offset_span<T>(); });
    return span;
}

bool offsets(int64_t qtype) { return offset_span(qtype) != 0; }

void matvec(const MatvecJob *jobs, int64_t n_jobs) {
    std::vector<int64_t> first(n_jobs + 1, 0);
    std::vector<FeaturesFn> fns(n_jobs);
    std::vector<Tables> tables(n_jobs);
    for (int64_t i = 0; i < n_jobs; ++i) {
        factored(jobs[i].qtype, &fns[i], &tables[i]);
        first[i + 1] = first[i] + (jobs[i].N + FEATURES - 1) / FEATURES;
    }
    at::parallel_for(0, first[n_jobs], 1, [&](int64_t u0, int64_t u1) {
        int64_t i = std::upper_bound(first.begin(), first.end(), u0) - first.begin() - 1;
        for (int64_t u = u0; u < u1; ++u) {
            while (u >= first[i + 1]) ++i;
            const int64_t n0 = (u - first[i]) * FEATURES, n1 = std::min(jobs[i].N, n0 + FEATURES);
            fns[i](jobs[i], n0, n1, tables[i]);
        }
    });
}

}  // namespace gguf_mv_avx512bf16
