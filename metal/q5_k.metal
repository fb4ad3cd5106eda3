#include "gguf_common.h"

// Q5_K: 256 elements in 176 bytes, 8 sub-blocks of 32. As Q4_K (same scales, same nibbles), plus a 5th
// bit: element l of sub-block j uses bit j of qh[l]. y = (d * sc) * q - (dmin * m).
struct block_q5_k {
    half d;
    half dmin;
    uchar scales[12];
    uchar qh[32];
    uchar qs[128];
};
static_assert(sizeof(block_q5_k) == 176, "Q5_K block is 176 bytes");

// ggml's get_scale_min_k4 (the same packing as Q4_K).
inline void gguf_scale_min_k5(int j, device const uchar *s, thread int &sc, thread int &m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Sub-block j: elements 32j .. 32j + 31.
inline void dequantize_q5_k(device const block_q5_k *b, ushort sub, thread float *y) {
    int sc, m;
    gguf_scale_min_k5(sub, b->scales, sc, m);
    const float d1 = float(b->d) * float(sc);
    const float m1 = float(b->dmin) * float(m);
    float h[32];
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 2), 4 * (sub % 2), 0xF, y);
    gguf_unpack_bits<32>(b->qh, sub, 1, h);
    for (int l = 0; l < 32; ++l) {
        // The 5-bit value from its low 4 bits and its fifth: small integers, exact in float.
        y[l] = d1 * (y[l] + 16.0f * h[l]) - m1;
    }
}

GGUF_DEQUANT_KERNELS(q5_k)
GGUF_MATMUL_KERNELS(q5_k)
