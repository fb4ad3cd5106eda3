#include "gguf_common.h"
#include "gguf_tables.h"

// IQ2_XXS: 256 elements in 66 bytes: d (half), then 8 groups of 32 elements, each stored as 4 u16 words
// (two little-endian u32: a, b). Byte l of a indexes iq2xxs_grid (8 values) for elements 8l..8l+7;
// bits 7l..7l+6 of b index ksigns_iq2xs (bit j set -> element 8l + j negated); ls = b >> 28.
// db = d * (0.5 + ls) * 0.25;
// y = db * (grid * sign), the same value as ggml's (db * grid) * sign: rounding commutes with negation.
struct block_iq2_xxs {
    half d;
    ushort qs[32];
};
static_assert(sizeof(block_iq2_xxs) == 66, "IQ2_XXS block is 66 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq2_xxs(device const block_iq2_xxs *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const uint a0 = b->qs[4 * sub + 0];
    const uint a1 = b->qs[4 * sub + 1];
    const uint sw = uint(b->qs[4 * sub + 2]) | (uint(b->qs[4 * sub + 3]) << 16);
    const float db = d * (0.5f + float(sw >> 28)) * 0.25f;
    const uint rows[4] = {a0 & 0xFF, a0 >> 8, a1 & 0xFF, a1 >> 8};
    uint signs = 0;
    for (int l = 0; l < 4; ++l) {
        signs |= uint(ksigns_iq2xs[(sw >> (7 * l)) & 127]) << (8 * l);
    }
    gguf_grid_values<4>(iq2xxs_grid, rows, signs, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = db * y[j];
    }
}

GGUF_DEQUANT_KERNELS(iq2_xxs)
GGUF_MATMUL_KERNELS(iq2_xxs)
