#include "gguf_common.h"

// Q4_0: 32 elements in 18 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble. y = (q - 8) * d.
struct block_q4_0 {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_q4_0(device const block_q4_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_scale_nibbles<16>(b->qs, 4 * sub, 8, d, y);
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 4 lanes per block, 2 quads, 1 run, no
// offset): w = a q with q = 16 (nibble - 8) and a = d / 16, so a q is the exact product dequantize_q4_0
// computes, and q is the signed byte of the nibble with bit 3 flipped, shifted to the high half of the
// byte: no subtraction per code. Part p reads qs bytes 4p .. 4p + 3 as 16-bit words (blocks are 2-byte
// aligned): quad 0 is their low nibbles (elements 4p ..), quad 1 their high nibbles (elements 16 + 4p ..),
// one run of 8 elements.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q4_0 *, ushort part, uint j) {
    return 16 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q4_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    device const ushort *qs = reinterpret_cast<device const ushort *>(b->qs + 4 * part);
    const uint w = (uint(qs[0]) | (uint(qs[1]) << 16)) ^ 0x88888888u;
    q[0] = float4(as_type<char4>((w << 4) & 0xF0F0F0F0u));
    q[1] = float4(as_type<char4>(w & 0xF0F0F0F0u));
    a[0] = float(b->d) * 0.0625f;
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(q4_0)
GGUF_MATMUL_FACTORED_KERNELS(q4_0)
