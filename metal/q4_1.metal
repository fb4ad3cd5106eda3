#include "gguf_common.h"

// Q4_1: 32 elements in 20 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble. y = q * d + m (the product is exact in float, so only the sum rounds).
struct block_q4_1 {
    half d;
    half m;
    uchar qs[16];
};
static_assert(sizeof(block_q4_1) == 20, "Q4_1 block is 20 bytes");

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_q4_1(device const block_q4_1 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const float m = float(b->m);
    gguf_unpack_bits<16>(b->qs, 4 * sub, 0xF, y);
    for (int j = 0; j < 16; ++j) {
        y[j] = y[j] * d + m;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 1 quad, 1 run, with
// offset): w = a q + o with q the nibble, a = d and o = m, as dequantize_q4_1 computes it (q d exact, one
// rounding of the sum). Part p holds elements 4p .. 4p + 3: the low nibbles of qs bytes 4p .. (p < 4) or
// the high nibbles of bytes 4(p - 4) .. (p >= 4); blocks are 4-byte aligned (20 bytes): 32-bit loads.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q4_1 *, ushort part, uint) {
    return 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q4_1 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint w = *reinterpret_cast<device const uint *>(b->qs + 4 * (part % 4)) >> (4 * (part / 4));
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
    q[0] = float4(as_type<uchar4>(w & 0x0F0F0F0Fu));
    a[0] = dm.x;
    o[0] = dm.y;
}
#endif

GGUF_DEQUANT_KERNELS(q4_1)
GGUF_MATMUL_FACTORED_KERNELS(q4_1)
