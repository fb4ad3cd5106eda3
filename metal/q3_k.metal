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

GGUF_DEQUANT_KERNELS(q3_k)
GGUF_MATMUL_KERNELS(q3_k)
