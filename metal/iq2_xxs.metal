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

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = grid * sign (an integer, |q| <= 43) and a = db of its group, the exact product
// dequantize_iq2_xxs computes. Part p takes grid row p % 4 of groups p / 4 (run 0) and 4 + p / 4 (run 1):
// elements 128u + 8p .. + 7, its quads 2u and 2u + 1. Lane p reads word p of qs as two 2-byte halves
// (blocks are 2-byte aligned): group g's grid indices are word 2g, its signs and scale word 2g + 1; each
// lane takes its groups' words from its block's lanes by shuffles.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq2_xxs *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged in threadgroup memory (3 KiB): the grid (2 words per row), then per sign index i the two words of
// byte masks (0xFF where ksigns_iq2xs[i] negates the element) that gguf_signed_bytes applies.
template <>
struct gguf_mv_stage_words<block_iq2_xxs> {
    enum { value = 256 * 2 + 128 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq2_xxs *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq2xxs_grid[0][0], 256 * 8, stage, tid, threads);
    gguf_stage_sign_masks(ksigns_iq2xs, stage + 256 * 2, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq2_xxs *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq2_xxs *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const float d8 = float(b->d) * 0.125f;  // db = d (0.5 + ls) / 4 = (d / 8) (2 ls + 1), exactly
    const uint mine = uint(b->qs[2 * part]) | (uint(b->qs[2 * part + 1]) << 16);
    const ushort first = table.lane - part;
    threadgroup const uint *masks = table.words + 256 * 2;
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const ushort g = 4 * u + part / 4;
        const uint rows = simd_shuffle(mine, ushort(first + 2 * g));
        const uint sw = simd_shuffle(mine, ushort(first + 2 * g + 1));
        const uint row = (rows >> (8 * (part % 4))) & 0xFF;
        const uint sign = (sw >> (7 * (part % 4))) & 127;
        const uint2 values = gguf_staged_pair(table.words, row);
        const uint2 negate = gguf_staged_pair(masks, sign);
        q[2 * u] = gguf_signed_bytes(values.x, negate.x);
        q[2 * u + 1] = gguf_signed_bytes(values.y, negate.y);
        a[u] = d8 * float((sw >> 27) | 1);
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq2_xxs)
GGUF_MATMUL_FACTORED_KERNELS(iq2_xxs)
