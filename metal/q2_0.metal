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

GGUF_DEQUANT_KERNELS(q2_0)
GGUF_MATMUL_KERNELS(q2_0)
