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

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = grid * sign (an integer, |q| <= 43) and a = db of its 16 elements, the exact
// product dequantize_iq2_s computes. Part p takes sub-group 16u + p (group 4u + p / 4, l = p % 4:
// elements 128u + 8p .. + 7, its quads 2u and 2u + 1) in run u.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq2_s *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged (10 KiB): the grid (two words per row), then the masks of every sign byte.
template <>
struct gguf_mv_stage_words<block_iq2_s> {
    enum { value = 1024 * 2 + 256 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq2_s *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq2s_grid[0][0], 1024 * 8, stage, tid, threads);
    gguf_stage_sign_masks(nullptr, stage + 1024 * 2, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq2_s *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq2_s *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const float d8 = float(b->d) * 0.125f;  // db = d (0.5 + s) / 4 = (d / 8) (2 s + 1), exactly
    const uint l = part % 4;
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const uint g = 4 * u + part / 4;
        const uint row = uint(b->qs[16 * u + part]) | (((uint(b->qh[g]) >> (2 * l)) & 3) << 8);
        const uint2 values = gguf_staged_pair(table.words, row);
        const uint2 negate = gguf_staged_pair(table.words + 1024 * 2, b->qs[32 + 16 * u + part]);
        q[2 * u] = gguf_signed_bytes(values.x, negate.x);
        q[2 * u + 1] = gguf_signed_bytes(values.y, negate.y);
        const uint s = (uint(b->scales[g]) >> (4 * (l / 2))) & 0xF;
        a[u] = d8 * float(2 * s + 1);
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq2_s)
GGUF_MATMUL_FACTORED_KERNELS(iq2_s)
