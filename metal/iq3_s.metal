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

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = grid * sign (an integer, |q| <= 15) and a = db of its group, the exact product
// dequantize_iq3_s computes. Part p takes 8-element sub-group l = p % 4 of group g = 4u + p / 4 in run u
// (elements 128u + 8p .. + 7, its quads 2u and 2u + 1): grid rows 2l, 2l + 1 of the group, their index
// bytes qs bytes 2(16u + p), + 1 (read as one 2-byte word), sign byte 16u + p.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq3_s *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged (4 KiB): the grid (a word per row), then the masks of every sign byte.
template <>
struct gguf_mv_stage_words<block_iq3_s> {
    enum { value = 512 + 256 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq3_s *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq3s_grid[0][0], 512 * 4, stage, tid, threads);
    gguf_stage_sign_masks(nullptr, stage + 512, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq3_s *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq3_s *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const float d = float(b->d);
    const uint l = part % 4;
    device const ushort *qs = reinterpret_cast<device const ushort *>(b->qs);
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const uint g = 4 * u + part / 4;
        const uint rows = qs[16 * u + part];
        const uint high = uint(b->qh[g]) >> (2 * l);  // bit 8 of rows 2l (bit 0) and 2l + 1 (bit 1)
        const uint2 negate = gguf_staged_pair(table.words + 512, b->signs[16 * u + part]);
        q[2 * u] = gguf_signed_bytes(table.words[(rows & 0xFF) | ((high & 1) << 8)], negate.x);
        q[2 * u + 1] = gguf_signed_bytes(table.words[(rows >> 8) | ((high & 2) << 7)], negate.y);
        const uint s = (uint(b->scales[g / 2]) >> (4 * (g % 2))) & 0xF;
        a[u] = d * float(1 + 2 * s);
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq3_s)
GGUF_MATMUL_FACTORED_KERNELS(iq3_s)
