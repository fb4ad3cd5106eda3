#include "gguf_common.h"
#include "gguf_tables.h"

// IQ4_NL: 32 elements in 18 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble. y = d * kvalues_iq4nl[nibble].
struct block_iq4_nl {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_iq4_nl(device const block_iq4_nl *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_nibble_lookup<16>(kvalues_iq4nl, b->qs, 4 * sub, d, y);
}

GGUF_DEQUANT_KERNELS(iq4_nl)
GGUF_MATMUL_KERNELS(iq4_nl)
