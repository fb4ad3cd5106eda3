#include "gguf_common.h"

// TQ2_0: 256 elements in 66 bytes, 2 bits per element, d last. Element e = 128j + 32l + m (j 0..1,
// l 0..3, m 0..31) has q = (qs[32j + m] >> 2l) & 3; y = (q - 1) * d.
struct block_tq2_0 {
    uchar qs[64];
    half d;
};
static_assert(sizeof(block_tq2_0) == 66, "TQ2_0 block is 66 bytes");

// Sub-block s: elements 32s .. 32s + 31, i.e. j = s / 4, l = s % 4.
inline void dequantize_tq2_0(device const block_tq2_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 4), 2 * (sub % 4), 3, y);
    for (int m = 0; m < 32; ++m) {
        y[m] = (y[m] - 1.0f) * d;  // float(q - 1): small integers, exact
    }
}

GGUF_DEQUANT_KERNELS(tq2_0)
GGUF_MATMUL_KERNELS(tq2_0)
