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

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = grid * sign (an integer, |q| <= 62) and a = db of its group, the exact product
// dequantize_iq3_xxs computes. Part p takes 8-element sub-group p % 4 (grid rows 2(p % 4), + 1) of groups
// p / 4 (run 0) and 4 + p / 4 (run 1): elements 128u + 8p .. + 7, its quads 2u and 2u + 1; their index
// bytes are qs bytes 2(16u + p), + 1. Lane p reads the sign word of group p % 8 (2 bytes at a time: blocks
// are 2-byte aligned) and takes its groups' words by shuffles.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq3_xxs *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged (2 KiB): the grid (a word per row), then the sign masks of gguf_stage_sign_masks.
template <>
struct gguf_mv_stage_words<block_iq3_xxs> {
    enum { value = 256 + 128 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq3_xxs *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq3xxs_grid[0][0], 256 * 4, stage, tid, threads);
    gguf_stage_sign_masks(ksigns_iq2xs, stage + 256, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq3_xxs *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq3_xxs *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const float d4 = float(b->d) * 0.25f;  // db = d (0.5 + ls) / 2 = (d / 4) (2 ls + 1), exactly
    device const ushort *qs = reinterpret_cast<device const ushort *>(b->qs);
    const uint mine = uint(qs[32 + 2 * (part % 8)]) | (uint(qs[33 + 2 * (part % 8)]) << 16);  // group p % 8's word
    const ushort first = table.lane - part;
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const uint sw = simd_shuffle(mine, ushort(first + 4 * u + part / 4));
        const uint rows = qs[16 * u + part];
        const uint sign = (sw >> (7 * (part % 4))) & 127;
        const uint2 negate = gguf_staged_pair(table.words + 256, sign);
        q[2 * u] = gguf_signed_bytes(table.words[rows & 0xFF], negate.x);
        q[2 * u + 1] = gguf_signed_bytes(table.words[rows >> 8], negate.y);
        a[u] = d4 * float((sw >> 27) | 1);
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq3_xxs)
GGUF_MATMUL_FACTORED_KERNELS(iq3_xxs)
