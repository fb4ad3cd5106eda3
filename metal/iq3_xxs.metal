#include "gguf_common.h"
#include "gguf_tables.h"

// IQ3_XXS: 256 elements in 98 bytes: d (half), qs[96]: 64 grid-index bytes, then 8 little-endian u32
// words at byte offset 66 of the block (not 4-aligned: assembled from bytes), one per group of 32.
// Group g: bytes qs[8g .. 8g+7] index iq3xxs_grid (4 values each); word g holds the ksigns_iq2xs index
// of 8-element sub-group l in bits 7l..7l+6 and ls in bits 28..31.
// db = d * (0.5 + ls) * 0.5;
// y = db * (grid * sign), the same value as ggml's (db * grid) * sign: rounding commutes with negation.
struct block_iq3_xxs {
    half d;
    uchar qs[96];
};
static_assert(sizeof(block_iq3_xxs) == 98, "IQ3_XXS block is 98 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq3_xxs(device const block_iq3_xxs *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const int w0 = 64 + 4 * sub;
    const uint sw = uint(b->qs[w0]) | (uint(b->qs[w0 + 1]) << 8) | (uint(b->qs[w0 + 2]) << 16) |
                    (uint(b->qs[w0 + 3]) << 24);
    const float db = d * (0.5f + float(sw >> 28)) * 0.5f;
    uint rows[8];
    for (int k = 0; k < 8; ++k) {
        rows[k] = b->qs[8 * sub + k];
    }
    uint signs = 0;
    for (int l = 0; l < 4; ++l) {
        signs |= uint(ksigns_iq2xs[(sw >> (7 * l)) & 127]) << (8 * l);
    }
    gguf_grid_values<8>(iq3xxs_grid, rows, signs, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = db * y[j];
    }
}

GGUF_DEQUANT_KERNELS(iq3_xxs)
GGUF_MATMUL_KERNELS(iq3_xxs)
