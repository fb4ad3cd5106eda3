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
