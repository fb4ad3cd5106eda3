#include "gguf_common.h"

// Q8_0: 32 elements in 34 bytes: one signed byte per element. y = q * d.
struct block_q8_0 {
    half d;
    int8_t qs[32];
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");

// Sub-block s: elements 16s .. 16s + 15.
inline void dequantize_q8_0(device const block_q8_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_scale_int8<16>(b->qs + 16 * sub, d, y);
}

GGUF_DEQUANT_KERNELS(q8_0)
GGUF_MATMUL_KERNELS(q8_0)
