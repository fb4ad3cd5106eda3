#include "gguf_common.h"

// Q1_0: 128 elements in 18 bytes, one bit per element (LSB first): element j is bit j % 8 of qs[j / 8].
// y = d if the bit is set, else -d (negation, as ggml does, not a multiplication by -1).
struct block_q1_0 {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_q1_0) == 18, "Q1_0 block is 18 bytes");

// Sub-block s: elements 32s .. 32s + 31, the bits of qs[4s .. 4s + 3].
inline void dequantize_q1_0(device const block_q1_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    device const uchar *qs = b->qs + 4 * sub;
    // The sub-block's 32 bits as one word (a per-element shift vectorizes; a byte pick does not).
    const uint bits = uint(qs[0]) | (uint(qs[1]) << 8) | (uint(qs[2]) << 16) | (uint(qs[3]) << 24);
    for (int j = 0; j < 32; ++j) {
        y[j] = float(int((bits >> j) & 1) * 2 - 1) * d;  // +-d (a NaN's sign may differ)
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 4 quads, 1 run, no
// offset): w = a q with q = -1 where the bit is set, else +1, and a = -d: dequantize_q1_0's +-d (-d times
// -1 is d; d times -1 is its negation, up to a NaN's sign). Quad j of part p holds elements 32j + 4p .. + 3
// (8 lanes read 32 contiguous x values per quad): bits 4(p % 2) .. of qs byte 4j + p / 2.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q1_0 *, ushort part, uint j) {
    return 32 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q1_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    // Element i's bit shifted to bit 31, the sign of +-1 (copysign reads that bit only): two instructions
    // per code, no conversion (the bits above 31 fall off; those below are ignored).
    const uint top = 31 - 4 * (part % 2);
    device const uchar *qs = b->qs + part / 2;
#pragma unroll
    for (uint j = 0; j < 4; ++j) {
        const uint byte = qs[4 * j];
#pragma unroll
        for (uint i = 0; i < 4; ++i) {
            q[j][i] = copysign(1.0f, as_type<float>(byte << (top - i)));
        }
    }
    a[0] = -float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(q1_0)
GGUF_MATMUL_FACTORED_KERNELS(q1_0)
