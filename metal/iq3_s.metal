#include "gguf_common.h"
#include "gguf_tables.h"

// IQ3_S: 256 elements in 110 bytes: d (half), qs[64], qh[8], signs[32], scales[4]. Group g: 8 indices
// qs[8g + i] | ((qh[g] >> i) & 1) << 8 into iq3s_grid (4 values each); sign byte signs[4g + l] for
// elements 8l..8l+7 (bit j set -> negated); s = low nibble of scales[g / 2] for even g, high for odd g;
// db = d * (1 + 2s);
// y = db * (grid * sign), the same value as ggml's (db * grid) * sign: rounding commutes with negation.
struct block_iq3_s {
    half d;
    uchar qs[64];
    uchar qh[8];
    uchar signs[32];
    uchar scales[4];
};
static_assert(sizeof(block_iq3_s) == 110, "IQ3_S block is 110 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq3_s(device const block_iq3_s *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const int s = (b->scales[sub / 2] >> (4 * (sub & 1))) & 0xF;
    const float db = d * float(1 + 2 * s);
    const uint qh = b->qh[sub];
    uint rows[8];
    for (int k = 0; k < 8; ++k) {
        rows[k] = uint(b->qs[8 * sub + k]) | (((qh >> k) & 1) << 8);
    }
    uint signs = 0;
    for (int l = 0; l < 4; ++l) {
        signs |= uint(b->signs[4 * sub + l]) << (8 * l);
    }
    gguf_grid_values<8>(iq3s_grid, rows, signs, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = db * y[j];
    }
}

GGUF_DEQUANT_KERNELS(iq3_s)
GGUF_MATMUL_KERNELS(iq3_s)
