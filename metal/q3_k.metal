#include "gguf_common.h"

// Q3_K: 256 elements in 110 bytes, 16 sub-blocks of 16. Low 2 bits as Q2_K: element e = 128h + 32g + l
// has (qs[32h + l] >> 2g) & 3. High bit: bit e / 32 of hmask[e % 32]; q = low2 - 4 when it is 0,
// low2 when it is 1. Scale i (6 bits, stored + 32): low 4 bits lo(scales[i]) for i < 8, hi(scales[i - 8])
// for i >= 8; high 2 bits (scales[8 + i % 4] >> 2 (i / 4)) & 3. y = (d * (sc - 32)) * q.
struct block_q3_k {
    uchar hmask[32];
    uchar qs[64];
    uchar scales[12];
    half d;
};
static_assert(sizeof(block_q3_k) == 110, "Q3_K block is 110 bytes");

// Sub-block s: elements 16s .. 16s + 15: h = s / 8, g = (s % 8) / 2, l = 16 (s % 2) + j; hmask bit s / 2.
inline void dequantize_q3_k(device const block_q3_k *b, ushort sub, thread float *y) {
    const int lo = sub < 8 ? (b->scales[sub] & 0xF) : (b->scales[sub - 8] >> 4);
    const int hi = (b->scales[8 + sub % 4] >> (2 * (sub / 4))) & 3;
    const float dl = float(b->d) * float((lo | (hi << 4)) - 32);
    const int shift = 2 * ((sub % 8) / 2);
    const int l0 = 16 * (sub % 2);
    float h[16];
    gguf_unpack_bits<16>(b->qs + 32 * (sub / 8) + l0, shift, 3, y);
    gguf_unpack_bits<16>(b->hmask + l0, sub / 2, 1, h);
    for (int j = 0; j < 16; ++j) {
        // The 2 low bits, minus 4 where the high bit is clear: small integers, exact in float.
        y[j] = dl * (y[j] + 4.0f * h[j] - 4.0f);
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 4 runs, no
// offset): w = a q with q = low2 + 4 * high - 4 and a = d * (sc - 32) of its sub-block, the exact product
// dequantize_q3_k computes. Quad j of part p holds elements e = 64j + 4p .. + 3: h = j / 2,
// g = 2(j % 2) + p / 8, l = 4(p % 8) ..: low bits (qs bytes 32h + l .. >> 2g), high bits (hmask bytes l ..,
// bit 4h + g); sub-block i = 4j + p / 4, whose scale takes its low 4 bits from scales[4(j % 2) + p / 4]
// (nibble j / 2) and its high 2 from scales[8 + p / 4] (bits 2j). Blocks are 2-byte aligned (gguf_mv_word).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q3_k *, ushort part, uint j) {
    return 64 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q3_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint hi = part / 8;
    const uint l = 4 * (part % 8);
    const uint high = gguf_mv_word(b->hmask + l);
    const uint sc_lo[2] = {b->scales[part / 4], b->scales[4 + part / 4]};
    const uint sc_hi = b->scales[8 + part / 4];
    const float d = float(b->d);
#pragma unroll
    for (uint h = 0; h < 2; ++h) {
        const uint low = gguf_mv_word(b->qs + 32 * h + l);
#pragma unroll
        for (uint t = 0; t < 2; ++t) {
            const uint j = 2 * h + t;
            const uint g = 2 * t + hi;
            const uint bits = ((low >> (2 * g)) & 0x03030303u) | (((high >> (4 * h + g)) & 0x01010101u) << 2);
            q[j] = float4(as_type<char4>((bits + 0x7C7C7C7Cu) ^ 0x80808080u));  // bits - 4 per byte, no carries
            const uint sc = ((sc_lo[t] >> (4 * h)) & 0xF) | (((sc_hi >> (2 * j)) & 3) << 4);
            a[j] = d * float(int(sc) - 32);
            o[j] = 0.0f;
        }
    }
}
#endif

GGUF_DEQUANT_KERNELS(q3_k)
GGUF_MATMUL_FACTORED_KERNELS(q3_k)
