#include "gguf_common.h"
#include "gguf_tables.h"

// IQ2_XS: 256 elements in 74 bytes: d (half), qs[32] (u16), scales[8]. One u16 w per 8 elements:
// w & 511 indexes iq2xs_grid (8 values), w >> 9 indexes ksigns_iq2xs (bit j set -> element j negated).
// scales[g]: low nibble for the first 16 elements of group g, high nibble for the last 16.
// db = d * (0.5 + s) * 0.25;
// y = db * (grid * sign), the same value as ggml's (db * grid) * sign: rounding commutes with negation.
struct block_iq2_xs {
    half d;
    ushort qs[32];
    uchar scales[8];
};
static_assert(sizeof(block_iq2_xs) == 74, "IQ2_XS block is 74 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq2_xs(device const block_iq2_xs *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const uint sc = b->scales[sub];
    const float db0 = d * (0.5f + float(sc & 0xF)) * 0.25f;
    const float db1 = d * (0.5f + float(sc >> 4)) * 0.25f;
    uint rows[4];
    uint signs = 0;
    for (int l = 0; l < 4; ++l) {
        const uint w = b->qs[4 * sub + l];
        rows[l] = w & 511;
        signs |= uint(ksigns_iq2xs[w >> 9]) << (8 * l);
    }
    gguf_grid_values<4>(iq2xs_grid, rows, signs, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = (j < 16 ? db0 : db1) * y[j];
    }
}

GGUF_DEQUANT_KERNELS(iq2_xs)
GGUF_MATMUL_KERNELS(iq2_xs)
