#include "gguf_common.h"

// Q2_0: 64 elements in 18 bytes, two bits per element (LSB first): element j is
// q = (qs[j / 4] >> 2 (j % 4)) & 3, codes 0..3 meaning -1, 0, +1, +2. y = (q - 1) * d.
struct block_q2_0 {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_q2_0) == 18, "Q2_0 block is 18 bytes");

// Sub-block s: elements 16s .. 16s + 15, from qs[4s .. 4s + 3].
inline void dequantize_q2_0(device const block_q2_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    device const uchar *qs = b->qs + 4 * sub;
    // The 4 bytes as one little-endian word: element j is bits 2j, 2j + 1 (a per-element shift vectorizes; a
    // byte pick does not).
    const uint w = uint(qs[0]) | uint(qs[1]) << 8 | uint(qs[2]) << 16 | uint(qs[3]) << 24;
    for (int j = 0; j < 16; ++j) {
        y[j] = float(int((w >> (2 * j)) & 3) - 1) * d;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 2 quads, 1 run, no
// offset): w = a q with q = code - 1 and a = d, the exact product dequantize_q2_0 computes. Quad j of part p
// holds elements 32j + 4p .. + 3 (8 lanes read 32 contiguous x values per quad): the four codes of qs byte
// 8j + p.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q2_0 *, ushort part, uint j) {
    return 32 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q2_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
#pragma unroll
    for (uint j = 0; j < 2; ++j) {
        // the byte's four 2-bit codes one per byte (fields 0, 1 | 2, 3 apart first, then each pair), minus 1
        // per byte as (c + 0x7F) ^ 0x80 (no carries): signed bytes
        const uint x = b->qs[8 * j + part];
        const uint pairs = (x | (x << 12)) & 0x000F000Fu;
        const uint codes = (pairs | (pairs << 6)) & 0x03030303u;
        q[j] = float4(as_type<char4>((codes + 0x7F7F7F7Fu) ^ 0x80808080u));
    }
    a[0] = float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(q2_0)
GGUF_MATMUL_FACTORED_KERNELS(q2_0)
