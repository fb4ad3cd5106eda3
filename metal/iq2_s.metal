#include "gguf_common.h"
#include "gguf_tables.h"

// IQ2_S: 256 elements in 82 bytes: d (half), qs[64] (32 grid-index bytes, then 32 sign bytes), qh[8],
// scales[8]. Group g, 8-element sub-group l: index qs[4g + l] | ((qh[g] >> 2l) & 3) << 8 into iq2s_grid
// (8 values); sign byte qs[32 + 4g + l] (bit j set -> element j negated). scales[g]: low nibble for the
// first 16 elements, high nibble for the last 16; db = d * (0.5 + s) * 0.25;
// y = db * (grid * sign), the same value as ggml's (db * grid) * sign: rounding commutes with negation.
struct block_iq2_s {
    half d;
    uchar qs[64];
    uchar qh[8];
    uchar scales[8];
};
static_assert(sizeof(block_iq2_s) == 82, "IQ2_S block is 82 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq2_s(device const block_iq2_s *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const uint sc = b->scales[sub];
    const float db0 = d * (0.5f + float(sc & 0xF)) * 0.25f;
    const float db1 = d * (0.5f + float(sc >> 4)) * 0.25f;
    const uint qh = b->qh[sub];
    uint rows[4];
    uint signs = 0;
    for (int l = 0; l < 4; ++l) {
        rows[l] = uint(b->qs[4 * sub + l]) | (((qh >> (2 * l)) & 3) << 8);
        signs |= uint(b->qs[32 + 4 * sub + l]) << (8 * l);
    }
    gguf_grid_values<4>(iq2s_grid, rows, signs, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = (j < 16 ? db0 : db1) * y[j];
    }
}

GGUF_DEQUANT_KERNELS(iq2_s)
GGUF_MATMUL_KERNELS(iq2_s)
