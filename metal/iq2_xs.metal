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

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = grid * sign (an integer, |q| <= 43) and a = db of its 16 elements, the exact
// product dequantize_iq2_xs computes. Part p takes qs word 16u + p (elements 128u + 8p .. + 7, its quads
// 2u and 2u + 1) in run u: group 4u + p / 4, scale nibble (p % 4) / 2.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq2_xs *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged (5 KiB): the grid (two words per row), then the sign masks of gguf_stage_sign_masks.
template <>
struct gguf_mv_stage_words<block_iq2_xs> {
    enum { value = 512 * 2 + 128 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq2_xs *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq2xs_grid[0][0], 512 * 8, stage, tid, threads);
    gguf_stage_sign_masks(ksigns_iq2xs, stage + 512 * 2, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq2_xs *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq2_xs *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const float d8 = float(b->d) * 0.125f;  // db = d (0.5 + s) / 4 = (d / 8) (2 s + 1), exactly
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const uint w = b->qs[16 * u + part];
        const uint2 values = gguf_staged_pair(table.words, w & 511);
        const uint2 negate = gguf_staged_pair(table.words + 512 * 2, w >> 9);
        q[2 * u] = gguf_signed_bytes(values.x, negate.x);
        q[2 * u + 1] = gguf_signed_bytes(values.y, negate.y);
        const uint s = (uint(b->scales[4 * u + part / 4]) >> (4 * ((part % 4) / 2))) & 0xF;
        a[u] = d8 * float(2 * s + 1);
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq2_xs)
GGUF_MATMUL_FACTORED_KERNELS(iq2_xs)
