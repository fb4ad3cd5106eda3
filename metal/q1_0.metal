#include "gguf_common.h"

// Q1_0: 128 elements in 18 bytes, one bit per element (LSB first): element j is bit j % 8 of qs[j / 8].
// y = d if the bit is set, else -d (negation, as ggml does, not a multiplication by -1).
struct block_q1_0 {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_q1_0) == 18, "Q1_0 block is 18 bytes");

// Sub-block s: elements 32s .. 32s + 31, the bits of qs[4s .. 4s + 3].
inline void dequantize_q1_0(device const block_q1_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    device const uchar *qs = b->qs + 4 * sub;
    // The sub-block's 32 bits as one word (a per-element shift vectorizes; a byte pick does not).
    const uint bits = uint(qs[0]) | (uint(qs[1]) << 8) | (uint(qs[2]) << 16) | (uint(qs[3]) << 24);
    for (int j = 0; j < 32; ++j) {
        y[j] = float(int((bits >> j) & 1) * 2 - 1) * d;  // +-d (a NaN's sign may differ)
    }
}

GGUF_DEQUANT_KERNELS(q1_0)
GGUF_MATMUL_KERNELS(q1_0)
