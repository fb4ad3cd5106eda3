#include "gguf_common.h"

// Q5_0: 32 elements in 22 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble; bit j of the little-endian 32-bit qh is the element's 5th bit. y = (q - 16) * d.
// qh sits at byte 2 (unaligned), so it is assembled from its bytes.
struct block_q5_0 {
    half d;
    uchar qh[4];
    uchar qs[16];
};
static_assert(sizeof(block_q5_0) == 22, "Q5_0 block is 22 bytes");

// Sub-block 0: elements 0..15 (low nibbles, qh bits 0..15); sub-block 1: 16..31 (high nibbles).
inline void dequantize_q5_0(device const block_q5_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    // This sub-block's 16 fifth bits, as one word.
    const uint qh = (uint(b->qh[0]) | uint(b->qh[1]) << 8 | uint(b->qh[2]) << 16 | uint(b->qh[3]) << 24) >> (16 * sub);
    gguf_unpack_bits<16>(b->qs, 4 * sub, 0xF, y);
    for (int j = 0; j < 16; ++j) {
        // float(q - 16) with q the 5-bit value: small integers, exact in float.
        y[j] = (y[j] + float(((qh >> j) & 1) << 4) - 16.0f) * d;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 1 quad, 1 run, no
// offset): w = a q with q the 5-bit value minus 16 and a = d, the exact product dequantize_q5_0 computes.
// Part p holds elements 4p .. 4p + 3: nibbles of qs bytes 4(p % 4) .. (low for p < 4, high for p >= 4),
// fifth bits 4p .. 4p + 3 of qh (gguf_mv_fifth_bits); blocks are 2-byte aligned (gguf_mv_word).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q5_0 *, ushort part, uint) {
    return 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q5_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint nibbles = (gguf_mv_word(b->qs + 4 * (part % 4)) >> (4 * (part / 4))) & 0x0F0F0F0Fu;
    q[0] = float4(as_type<uchar4>(nibbles | gguf_mv_fifth_bits(gguf_mv_word(b->qh), part))) - 16.0f;
    a[0] = float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(q5_0)
GGUF_MATMUL_FACTORED_KERNELS(q5_0)
