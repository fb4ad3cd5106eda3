#include "gguf_common.h"

// Q5_0: 32 elements in 22 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble; bit j of the little-endian 32-bit qh is the element's 5th bit. y = (q - 16) * d.
// qh sits at byte 2, so it is read byte by byte.
struct block_q5_0 {
    half d;
    uchar qh[4];
    uchar qs[16];
};
static_assert(sizeof(block_q5_0) == 22, "Q5_0 block is 22 bytes");

// Sub-block 0: elements 0..15 (low nibbles, qh bits 0..15); sub-block 1: 16..31 (high nibbles).
inline void dequantize_q5_0(device const block_q5_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const ushort shift = 4 * sub;
    for (int j = 0; j < 16; ++j) {
        const int e = 16 * sub + j;
        const int hbit = (b->qh[e / 8] >> (e % 8)) & 1;
        const int q = int((b->qs[j] >> shift) & 0xF) | (hbit << 4);
        y[j] = float(q - 16) * d;
    }
}

GGUF_DEQUANT_KERNELS(q5_0)
GGUF_MATMUL_KERNELS(q5_0)
