#include "gguf_common.h"

// Q6_K: 256 elements in 210 bytes, 16 sub-blocks of 16 with a signed 8-bit scale each. Half h (128
// elements) uses ql[64h ...] and qh[32h ...]: element 128h + 32k + l (k 0..3, l 0..31) has low 4 bits
// lo(ql[l]), lo(ql[l + 32]), hi(ql[l]), hi(ql[l + 32]) for k = 0, 1, 2, 3 and high 2 bits
// (qh[l] >> 2k) & 3; q = (low | high << 4) - 32. y = (d * scales[e / 16]) * q.
struct block_q6_k {
    uchar ql[128];
    uchar qh[64];
    int8_t scales[16];
    half d;
};
static_assert(sizeof(block_q6_k) == 210, "Q6_K block is 210 bytes");

// Sub-block s: elements 16s .. 16s + 15: h = s / 8, k = (s % 8) / 2, l = 16 (s % 2) + j.
inline void dequantize_q6_k(device const block_q6_k *b, ushort sub, thread float *y) {
    const float dl = float(b->d) * float(int(b->scales[sub]));
    const int h = sub / 8;
    const int k = (sub % 8) / 2;
    const int l0 = 16 * (sub % 2);
    float hi[16];
    gguf_unpack_bits<16>(b->ql + 64 * h + 32 * (k % 2) + l0, 4 * (k / 2), 0xF, y);
    gguf_unpack_bits<16>(b->qh + 32 * h + l0, 2 * k, 3, hi);
    for (int j = 0; j < 16; ++j) {
        // The 6-bit value minus 32 from its low 4 and high 2 bits: small integers, exact in float.
        y[j] = dl * (y[j] + 16.0f * hi[j] - 32.0f);
    }
}

#if defined(GGUF_CPU) && defined(GGUF_HAVE_AVX512)
// CPU, AVX-512: a whole block in registers. The 64 ql bytes of half h hold the low 4 bits of its elements
// 0..63 (low nibbles) and 64..127 (high nibbles) in order; its 32 qh bytes, shifted by 2k, the high 2 bits of
// elements 32k.. (k = 0, 1 under the low nibbles, 2, 3 under the high). Each 16 values: the same 6-bit
// integer minus 32, times d * scales[sub], rounded once to float then once to T (no subnormal: Q6_K has none).
template <>
struct gguf_cpu_whole_block<block_q6_k> {
    static constexpr bool defined = true;

    template <typename T>
    static inline void decode(const block_q6_k *b, T *dst) {
        const __m512 dl = _mm512_mul_ps(
            _mm512_set1_ps(float(b->d)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->scales)))));
        const __m512i low4 = _mm512_set1_epi8(0x0F), low2 = _mm512_set1_epi8(3), bias = _mm512_set1_epi8(32);
        for (int h = 0; h < 2; ++h) {
            const __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b->qh + 32 * h));
            // bytes l and 32 + l: qh[l] and qh[l] >> 2 (16-bit shifts: the bits a byte takes from its neighbour
            // are masked off below)
            const __m512i qh02 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            const __m512i q[2] = {
                _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(ql, low4),
                                                _mm512_slli_epi16(_mm512_and_si512(qh02, low2), 4)), bias),
                _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                                _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh02, 4), low2), 4)),
                                bias)};
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) {  // elements 128h + 32j ..: sub-blocks 8h + 2j, 8h + 2j + 1
                const __m512i codes = q[j / 2];
                const int sub = 8 * h + 2 * j;
                const __m128i c0 = j % 2 ? _mm512_extracti32x4_epi32(codes, 2) : _mm512_castsi512_si128(codes);
                const __m128i c1 = j % 2 ? _mm512_extracti32x4_epi32(codes, 3) : _mm512_extracti32x4_epi32(codes, 1);
                const __m512 y0 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_set1_epi32(sub), dl),
                                                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c0)));
                const __m512 y1 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_set1_epi32(sub + 1), dl),
                                                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c1)));
                if constexpr (std::is_same_v<T, bfloat>) {
                    metal::store_x32<false>(dst + 128 * h + 32 * j, y0, y1);
                } else {
                    metal::store_x32(dst + 128 * h + 32 * j, y0, y1);
                }
            }
        }
    }
};
#endif

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 4 runs, no
// offset): w = a q with q the 6-bit value minus 32 and a = d * scales[e / 16], the exact product
// dequantize_q6_k computes. Quad j of part p holds elements e = 64j + 4p .. + 3: half h = j / 2, k =
// 2(j % 2) + p / 8, l = 4(p % 8) ..: low bits from ql bytes 64h + 32(p / 8) + 4(p % 8) .. (nibble j % 2),
// high bits from qh bytes 32h + 4(p % 8) .. (bits 2k, 2k + 1); sub-block 4j + p / 4. Blocks are 2-byte
// aligned: 16-bit loads (gguf_mv_word).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q6_k *, ushort part, uint j) {
    return 64 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q6_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint hi = part / 8;
    const uint l = 4 * (part % 8);
    const float d = float(b->d);
#pragma unroll
    for (uint h = 0; h < 2; ++h) {
        const uint low = gguf_mv_word(b->ql + 64 * h + 32 * hi + l);
        const uint high = gguf_mv_word(b->qh + 32 * h + l);
#pragma unroll
        for (uint t = 0; t < 2; ++t) {
            const uint j = 2 * h + t;
            const uint bits = ((low >> (4 * t)) & 0x0F0F0F0Fu) | (((high >> (2 * (2 * t + hi))) & 0x03030303u) << 4);
            q[j] = float4(as_type<uchar4>(bits)) - 32.0f;
            a[j] = d * float(int(b->scales[4 * j + part / 4]));
            o[j] = 0.0f;
        }
    }
}
#endif

GGUF_DEQUANT_KERNELS(q6_k)
GGUF_MATMUL_FACTORED_KERNELS(q6_k)
