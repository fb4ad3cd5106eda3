#include "gguf_common.h"

// Q2_K: 256 elements in 84 bytes, 16 sub-blocks of 16. Element e = 128h + 32g + l (h 0..1, g 0..3,
// l 0..31) has q = (qs[32h + l] >> 2g) & 3. Sub-block e / 16 uses sc = scales[e / 16]:
// dl = d * lo(sc), ml = dmin * hi(sc), y = dl * q - ml (products exact; only the difference rounds).
struct block_q2_k {
    uchar scales[16];
    uchar qs[64];
    half d;
    half dmin;
};
static_assert(sizeof(block_q2_k) == 84, "Q2_K block is 84 bytes");

// Sub-block s: elements 16s .. 16s + 15, i.e. h = s / 8, g = (s % 8) / 2, l = 16 (s % 2) + j.
inline void dequantize_q2_k(device const block_q2_k *b, ushort sub, thread float *y) {
    const uchar sc = b->scales[sub];
    const float dl = float(b->d) * float(int(sc & 0xF));
    const float ml = float(b->dmin) * float(int(sc >> 4));
    const int shift = 2 * ((sub % 8) / 2);
    gguf_unpack_bits<16>(b->qs + 32 * (sub / 8) + 16 * (sub % 2), shift, 3, y);
    for (int j = 0; j < 16; ++j) {
        y[j] = dl * y[j] - ml;
    }
}

GGUF_DEQUANT_KERNELS(q2_k)
GGUF_MATMUL_KERNELS(q2_k)
