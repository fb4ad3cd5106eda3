#include "gguf_common.h"

// Q4_1: 32 elements in 20 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble. y = q * d + m (the product is exact in float, so only the sum rounds).
struct block_q4_1 {
    half d;
    half m;
    uchar qs[16];
};
static_assert(sizeof(block_q4_1) == 20, "Q4_1 block is 20 bytes");

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_q4_1(device const block_q4_1 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const float m = float(b->m);
    gguf_unpack_bits<16>(b->qs, 4 * sub, 0xF, y);
    for (int j = 0; j < 16; ++j) {
        y[j] = y[j] * d + m;
    }
}

GGUF_DEQUANT_KERNELS(q4_1)
GGUF_MATMUL_KERNELS(q4_1)
