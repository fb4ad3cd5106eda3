#include "gguf_common.h"
#include "gguf_tables.h"

// IQ1_S: 256 elements in 50 bytes: d (half), qs[32], qh[8] (u16, at byte 34). Group g, h = qh[g]:
// 8-element sub-group l indexes iq1s_grid (values -1/0/1) with qs[4g + l] | ((h >> 3l) & 7) << 8;
// dl = d * (2 * ((h >> 12) & 7) + 1); delta = -IQ1S_DELTA if bit 15 of h is set, else +IQ1S_DELTA;
// y = dl * (grid + delta).
struct block_iq1_s {
    half d;
    uchar qs[32];
    ushort qh[8];
};
static_assert(sizeof(block_iq1_s) == 50, "IQ1_S block is 50 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq1_s(device const block_iq1_s *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const uint h = b->qh[sub];
    const float dl = d * float(2 * int((h >> 12) & 7) + 1);
    const float delta = gguf_sign(h, 15) * IQ1S_DELTA;  // arithmetic, not a select: no branch on random bits
    uint rows[4];
    for (int l = 0; l < 4; ++l) {
        rows[l] = uint(b->qs[4 * sub + l]) | (((h >> (3 * l)) & 7) << 8);
    }
    gguf_grid_values<4>(iq1s_grid, rows, 0, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = dl * (y[j] + delta);
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = 8 (grid + delta) (an integer: +-1, +-7, +-9) and a = dl / 8 of its group,
// the exact product dequantize_iq1_s computes (never 0 times an infinite scale: q is odd). Part p takes
// sub-group l = p % 4 of group g = 4u + p / 4 in run u: elements 128u + 8p .. + 7, its quads 2u and 2u + 1.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq1_s *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged (16 KiB): the grid as iq1s_staged holds it (see gguf_iq1_codes).
template <>
struct gguf_mv_stage_words<block_iq1_s> {
    enum { value = 2048 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq1_s *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq1s_staged[0][0], 2048 * 8, stage, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq1_s *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq1_s *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const float d8 = float(b->d) * 0.125f;  // dl / 8 = (d / 8) (2k + 1), exactly
    const uint l = part % 4;
    // the lane's bytes as pointers with constant offsets per run (one address computation per block)
    device const uchar *qs = b->qs + part;
    device const ushort *qh = b->qh + part / 4;
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const uint h = qh[4 * u];
        // bits 3l .. 3l + 2 of h rotated to bits 8..10 (l = 3: one bit right)
        const uint2 values = gguf_staged_pair(table.words, uint(qs[16 * u]) | (gguf_rotl(h, 8 - 3 * l) & 0x700));
        const bool negative = (h & 0x8000u) != 0;
        q[2 * u] = gguf_iq1_codes(values.x, negative);
        q[2 * u + 1] = gguf_iq1_codes(values.y, negative);
        a[u] = d8 * float(((h >> 11) & 0xE) | 1);  // 2 ((h >> 12) & 7) + 1
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq1_s)
GGUF_MATMUL_FACTORED_KERNELS(iq1_s)
