#include "gguf_common.h"

// Q4_K: 256 elements in 144 bytes, 8 sub-blocks of 32. Sub-block j reads qs[32 (j / 2) ...], low nibbles
// if j is even, high if odd. 6-bit scale and min per sub-block (ggml's get_scale_min_k4):
//   j < 4:  sc = scales[j] & 63,                               m = scales[j + 4] & 63
//   j >= 4: sc = lo(scales[j + 4]) | (scales[j - 4] >> 6) << 4, m = hi(scales[j + 4]) | (scales[j] >> 6) << 4
// y = (d * sc) * q - (dmin * m) (products exact; only the difference rounds).
struct block_q4_k {
    half d;
    half dmin;
    uchar scales[12];
    uchar qs[128];
};
static_assert(sizeof(block_q4_k) == 144, "Q4_K block is 144 bytes");

inline void gguf_scale_min_k4(int j, device const uchar *s, thread int &sc, thread int &m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Sub-block j: elements 32j .. 32j + 31.
inline void dequantize_q4_k(device const block_q4_k *b, ushort sub, thread float *y) {
    int sc, m;
    gguf_scale_min_k4(sub, b->scales, sc, m);
    const float d1 = float(b->d) * float(sc);
    const float m1 = float(b->dmin) * float(m);
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 2), 4 * (sub % 2), 0xF, y);
    for (int l = 0; l < 32; ++l) {
        y[l] = d1 * y[l] - m1;
    }
}

GGUF_DEQUANT_KERNELS(q4_k)
GGUF_MATMUL_KERNELS(q4_k)
