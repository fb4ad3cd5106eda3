#include "gguf_common.h"

// Q5_1: 32 elements in 24 bytes. 5-bit q as Q5_0 (nibble from qs, bit e of the little-endian qh);
// y = q * d + m (the product is exact in float, so only the sum rounds).
struct block_q5_1 {
    half d;
    half m;
    uchar qh[4];
    uchar qs[16];
};
static_assert(sizeof(block_q5_1) == 24, "Q5_1 block is 24 bytes");

// Sub-block 0: elements 0..15 (low nibbles, qh bits 0..15); sub-block 1: 16..31 (high nibbles).
inline void dequantize_q5_1(device const block_q5_1 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const float m = float(b->m);
    // This sub-block's 16 fifth bits, as one word.
    const uint qh = (uint(b->qh[0]) | uint(b->qh[1]) << 8 | uint(b->qh[2]) << 16 | uint(b->qh[3]) << 24) >> (16 * sub);
    gguf_unpack_bits<16>(b->qs, 4 * sub, 0xF, y);
    for (int j = 0; j < 16; ++j) {
        // float(q) with q the 5-bit value: a small integer, exact in float.
        y[j] = (y[j] + float(((qh >> j) & 1) << 4)) * d + m;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 1 quad, 1 run, with
// offset): w = a q + o with q the 5-bit value, a = d and o = m, as dequantize_q5_1 computes it (q d exact,
// one rounding of the sum). Part p holds elements 4p .. 4p + 3, as Q5_0's (gguf_mv_fifth_bits); blocks are
// 4-byte aligned (24 bytes): 32-bit loads.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q5_1 *, ushort part, uint) {
    return 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q5_1 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint qs = *reinterpret_cast<device const uint *>(b->qs + 4 * (part % 4));
    const uint qh = *reinterpret_cast<device const uint *>(b->qh);
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
    q[0] = float4(as_type<uchar4>(((qs >> (4 * (part / 4))) & 0x0F0F0F0Fu) | gguf_mv_fifth_bits(qh, part)));
    a[0] = dm.x;
    o[0] = dm.y;
}
#endif

GGUF_DEQUANT_KERNELS(q5_1)
GGUF_MATMUL_FACTORED_KERNELS(q5_1)
