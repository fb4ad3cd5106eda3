#include "gguf_common.h"

// Q4_K: 256 elements in 144 bytes, 8 sub-blocks of 32. Sub-block j reads qs[32 (j / 2) ...], low nibbles
// if j is even, high if odd. 6-bit scale and min per sub-block (ggml's get_scale_min_k4):
//   j < 4:  sc = scales[j] & 63,                               m = scales[j + 4] & 63
//   j >= 4: sc = lo(scales[j + 4]) | (scales[j - 4] >> 6) << 4, m = hi(scales[j + 4]) | (scales[j] >> 6) << 4
// y = (d * sc) * q - (dmin * m) (products exact; only the difference rounds).
struct block_q4_k {
    half d;
    half dmin;
    uchar scales[12];
    uchar qs[128];
};
static_assert(sizeof(block_q4_k) == 144, "Q4_K block is 144 bytes");

inline void gguf_scale_min_k4(int j, device const uchar *s, thread int &sc, thread int &m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Sub-block j: elements 32j .. 32j + 31.
inline void dequantize_q4_k(device const block_q4_k *b, ushort sub, thread float *y) {
    int sc, m;
    gguf_scale_min_k4(sub, b->scales, sc, m);
    const float d1 = float(b->d) * float(sc);
    const float m1 = float(b->dmin) * float(m);
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 2), 4 * (sub % 2), 0xF, y);
    for (int l = 0; l < 32; ++l) {
        y[l] = d1 * y[l] - m1;
    }
}

#if defined(GGUF_CPU) && defined(GGUF_HAVE_AVX512)
// CPU, AVX-512: a whole block in registers. The 64 qs bytes of half h hold sub-blocks 4h and 4h + 2 in their
// low nibbles (bytes 0..31, 32..63) and 4h + 1, 4h + 3 in their high nibbles. The 8 scales and 8 mins are
// gguf_scale_min_k4 on the scale bytes as words (as gguf_mv_codes); d * sc and dmin * m are exact, and each
// value is d1 * q - m1 rounded once to float, then once to T (Q4_K has no subnormal value).
template <>
struct gguf_cpu_whole_block<block_q4_k> {
    static constexpr bool defined = true;

    template <typename T>
    static inline void decode(const block_q4_k *b, T *dst) {
        uint s[3];
        std::memcpy(s, b->scales, sizeof(s));
        const uint64_t sc = uint64_t(s[0] & 0x3F3F3F3Fu) |
                            uint64_t((s[2] & 0x0F0F0F0Fu) | ((s[0] >> 2) & 0x30303030u)) << 32;
        const uint64_t m = uint64_t(s[1] & 0x3F3F3F3Fu) |
                           uint64_t(((s[2] >> 4) & 0x0F0F0F0Fu) | ((s[1] >> 2) & 0x30303030u)) << 32;
        // lanes 0..7: d * sc of sub-blocks 0..7; lanes 8..15: dmin * m
        const __m512 factor = _mm512_insertf32x8(_mm512_set1_ps(float(b->d)), _mm256_set1_ps(float(b->dmin)), 1);
        const __m512 dm = _mm512_mul_ps(factor, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                                    _mm_set_epi64x(int64_t(m), int64_t(sc)))));
        const __m512i low4 = _mm512_set1_epi8(0x0F);
        for (int h = 0; h < 2; ++h) {
            const __m512i qs = _mm512_loadu_si512(b->qs + 64 * h);
            const __m512i q[2] = {_mm512_and_si512(qs, low4), _mm512_and_si512(_mm512_srli_epi16(qs, 4), low4)};
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) {  // sub-block 4h + j: nibbles (j % 2) of bytes 32 (j / 2) ..
                const int sub = 4 * h + j;
                const __m512i codes = q[j % 2];
                const __m128i c0 = j / 2 ? _mm512_extracti32x4_epi32(codes, 2) : _mm512_castsi512_si128(codes);
                const __m128i c1 = j / 2 ? _mm512_extracti32x4_epi32(codes, 3) : _mm512_extracti32x4_epi32(codes, 1);
                const __m512 d1 = _mm512_permutexvar_ps(_mm512_set1_epi32(sub), dm);
                const __m512 m1 = _mm512_permutexvar_ps(_mm512_set1_epi32(8 + sub), dm);
                const __m512 y0 = _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c0))), m1);
                const __m512 y1 = _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c1))), m1);
                if constexpr (std::is_same_v<T, bfloat>) {
                    metal::store_x32<false>(dst + 32 * sub, y0, y1);
                } else {
                    metal::store_x32(dst + 32 * sub, y0, y1);
                }
            }
        }
    }
};
#endif

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, with
// offset): w = a q + o with q the nibble, a = d * sc and o = -(dmin * m) of its sub-block, the exact
// products dequantize_q4_k computes (it rounds a q + o once: y = d1 * q - m1). Part p = 4g + i takes
// elements 16t + 4i .. + 3 (t = 0, 1) of sub-blocks 2g (run 0) and 2g + 1 (run 1): quad j = 2v + t is
// elements 64g + 32v + 16t + 4i .., the nibbles v of qs bytes 32g + 16t + 4i .. (one word per t).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q4_k *, ushort part, uint j) {
    return 64 * (part / 4) + 16 * j + 4 * (part % 4);
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q4_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint g = part / 4;
    // the lane's offset in a block is computed once (one address addition per row and block)
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + (32 * g + 4 * (part % 4)));
    const uint w0 = qs[0], w1 = qs[4];
    const float4 scm = float4(as_type<uchar4>(gguf_mv_scale_min_k4(b->scales, g)));  // sc(2g + v), m(2g + v)
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
#pragma unroll
    for (uint v = 0; v < 2; ++v) {
        q[2 * v] = float4(as_type<uchar4>((w0 >> (4 * v)) & 0x0F0F0F0Fu));
        q[2 * v + 1] = float4(as_type<uchar4>((w1 >> (4 * v)) & 0x0F0F0F0Fu));
        a[v] = dm.x * scm[v];
        o[v] = -(dm.y * scm[2 + v]);
    }
}

// The mat-vec tier's scales and offsets: decoded by the lanes of a block together (gguf_mv_row_scales_k4).
template <>
struct gguf_mv_lane_scales<block_q4_k> {
    enum { value = 1 };
};

template <uint R, int RUNS>
GGUF_MV_INLINE bool gguf_mv_row_scales(device const block_q4_k *const thread *rows, uint ib, ushort part,
                                       ushort lane, thread float a[][RUNS], thread float o[][RUNS]) {
    return gguf_mv_row_scales_k4<R, RUNS>(rows, ib, part, lane, a, o);
}
#endif

GGUF_DEQUANT_KERNELS(q4_k)
GGUF_MATMUL_FACTORED_KERNELS(q4_k)
