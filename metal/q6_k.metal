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

GGUF_DEQUANT_KERNELS(q6_k)
GGUF_MATMUL_KERNELS(q6_k)
