#include "gguf_common.h"

// TQ2_0: 256 elements in 66 bytes, 2 bits per element, d last. Element e = 128j + 32l + m (j 0..1,
// l 0..3, m 0..31) has q = (qs[32j + m] >> 2l) & 3; y = (q - 1) * d.
struct block_tq2_0 {
    uchar qs[64];
    half d;
};
static_assert(sizeof(block_tq2_0) == 66, "TQ2_0 block is 66 bytes");

// Sub-block s: elements 32s .. 32s + 31, i.e. j = s / 4, l = s % 4.
inline void dequantize_tq2_0(device const block_tq2_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 4), 2 * (sub % 4), 3, y);
    for (int m = 0; m < 32; ++m) {
        y[m] = (y[m] - 1.0f) * d;  // float(q - 1): small integers, exact
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 1 run, no
// offset): w = a q with q = code - 1 and a = d, the exact product dequantize_tq2_0 computes. Quad j of part
// p holds elements e = 64j + 4p .. + 3: qs bytes 32(j / 2) + 4(p % 8) .., bits 2(2(j % 2) + p / 8); blocks
// are 2-byte aligned (gguf_mv_word).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_tq2_0 *, ushort part, uint j) {
    return 64 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_tq2_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint hi = part / 8;
#pragma unroll
    for (uint h = 0; h < 2; ++h) {
        const uint w = gguf_mv_word(b->qs + 32 * h + 4 * (part % 8));
#pragma unroll
        for (uint t = 0; t < 2; ++t) {
            // code - 1 per byte as (code + 0x7F) ^ 0x80 (no carries): signed bytes
            const uint codes = (w >> (2 * (2 * t + hi))) & 0x03030303u;
            q[2 * h + t] = float4(as_type<char4>((codes + 0x7F7F7F7Fu) ^ 0x80808080u));
        }
    }
    a[0] = float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(tq2_0)
GGUF_MATMUL_FACTORED_KERNELS(tq2_0)
