#include "gguf_common.h"

// Q4_0: 32 elements in 18 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble. y = (q - 8) * d.
struct block_q4_0 {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_q4_0(device const block_q4_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_scale_nibbles<16>(b->qs, 4 * sub, 8, d, y);
}

GGUF_DEQUANT_KERNELS(q4_0)
GGUF_MATMUL_KERNELS(q4_0)
