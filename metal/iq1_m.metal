#include "gguf_common.h"
#include "gguf_tables.h"

// IQ1_M: 256 elements in 56 bytes: qs[32], qh[16], scales[8] read as four little-endian u16 words
// sc[0..3] (assembled from bytes). No separate d: its half bits are the top nibbles of sc[0..3]
// (bits 0-3, 4-7, 8-11, 12-15). Group g: dl1 = d * (2 * ((sc[g/2] >> 6(g%2)) & 7) + 1) for the first 16
// elements, dl2 with shift 6(g%2) + 3 for the last 16. 8-element sub-group l uses qh byte
// q = qh[2g + l/2], nibble n = low nibble of q for even l, high for odd l: index
// qs[4g + l] | (n & 7) << 8 into iq1s_grid; n & 8 -> delta = -IQ1S_DELTA, else +IQ1S_DELTA.
// y = dl * (grid + delta).
struct block_iq1_m {
    uchar qs[32];
    uchar qh[16];
    uchar scales[8];
};
static_assert(sizeof(block_iq1_m) == 56, "IQ1_M block is 56 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq1_m(device const block_iq1_m *b, ushort sub, thread float *y) {
    uint sc[4];
    for (int k = 0; k < 4; ++k) {
        sc[k] = uint(b->scales[2 * k]) | (uint(b->scales[2 * k + 1]) << 8);
    }
    const ushort dbits = ushort((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) |
                                (sc[3] & 0xF000));
    const float d = float(as_type<half>(dbits));
    const uint s = sc[sub / 2] >> (6 * (sub & 1));
    const float dl1 = d * float(2 * int(s & 7) + 1);
    const float dl2 = d * float(2 * int((s >> 3) & 7) + 1);
    uint rows[4];
    uint negative = 0;  // bit l: row l's delta is negative
    for (int l = 0; l < 4; ++l) {
        const uint n = (uint(b->qh[2 * sub + l / 2]) >> (4 * (l & 1))) & 0xF;
        rows[l] = uint(b->qs[4 * sub + l]) | ((n & 7) << 8);
        negative |= ((n >> 3) & 1) << l;
    }
    gguf_grid_values<4>(iq1s_grid, rows, 0, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = (j < 16 ? dl1 : dl2) * (y[j] + gguf_sign(negative, j / 8) * IQ1S_DELTA);
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = 8 (grid + delta) (an integer: +-1, +-7, +-9) and a = dl / 8 of its 16
// elements, the exact product dequantize_iq1_m computes (never 0 times an infinite scale: q is odd). Part p
// takes sub-group l = p % 4 of group g = 4u + p / 4 in run u: elements 128u + 8p .. + 7, its quads 2u and
// 2u + 1; its qh nibble is nibble p % 2 of qh byte 8u + p / 2. Blocks are 8-byte aligned (56 bytes).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq1_m *, ushort part, uint j) {
    return 128 * (j / 2) + 8 * part + 4 * (j % 2);
}

// Staged (16 KiB): the grid as iq1s_staged holds it (see gguf_iq1_codes).
template <>
struct gguf_mv_stage_words<block_iq1_m> {
    enum { value = 2048 * 2 };
};

GGUF_MV_INLINE void gguf_mv_stage(device const block_iq1_m *, threadgroup uint *stage, ushort tid, ushort threads) {
    gguf_stage_grid(&iq1s_staged[0][0], 2048 * 8, stage, tid, threads);
}

GGUF_MV_INLINE gguf_mv_staged gguf_mv_staged_table(device const block_iq1_m *, ushort lane,
                                                   threadgroup const uint *stage) {
    return {stage, lane};
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq1_m *b, ushort part, gguf_mv_staged table,
                                  thread float4 *q, thread float *a, thread float *o) {
    const uint2 sc = *reinterpret_cast<device const uint2 *>(b->scales);  // u16 words sc[0..3]
    // d's half bits: the top nibbles of sc[0..3], in order (each word's two top nibbles moved together; the
    // bits that land above bit 15 fall off in the 16-bit value)
    // (z holds sc[0]'s at bits 0..3, sc[2]'s at 8..11, sc[1]'s at 16..19, sc[3]'s at 24..27; z >> 12 moves the
    // last two to bits 4..7 and 12..15 and drops the first two)
    const uint z = ((sc.x & 0xF000F000u) >> 12) | ((sc.y & 0xF000F000u) >> 4);
    const uint dbits = z | (z >> 12);
    const float d8 = float(as_type<half>(ushort(dbits))) * 0.125f;  // dl / 8 = (d / 8) (2k + 1), exactly
    const uint l = part % 4;
    // the lane's bytes as pointers with constant offsets per run (one address computation per block)
    device const uchar *qs = b->qs + part;
    device const uchar *qh = b->qh + part / 2;
#pragma unroll
    for (uint u = 0; u < 2; ++u) {
        const uint g = 4 * u + part / 4;
        // the qh nibble's 3 index bits moved straight to bits 8..10, its bit 3 tested in place
        const uint nibbles = qh[8 * u];
        const uint2 values = gguf_staged_pair(table.words, uint(qs[16 * u]) | ((nibbles << (8 - 4 * (part % 2))) & 0x700));
        const bool negative = (nibbles & (8u << (4 * (part % 2)))) != 0;
        q[2 * u] = gguf_iq1_codes(values.x, negative);
        q[2 * u + 1] = gguf_iq1_codes(values.y, negative);
        const uint word = u == 0 ? sc.x : sc.y;  // sc[g / 2] in bits 16 (g / 2 % 2) ..
        // 2k + 1 for the 3 bits k at bit s = 16 ((g / 2) % 2) + 6 (g % 2) + 3 (l / 2) of the word: the word
        // rotated right by s - 1 (left by one for s = 0) puts them at bits 1..3
        const uint s = 16 * ((g / 2) % 2) + 6 * (g % 2) + 3 * (l / 2);
        a[u] = d8 * float((gguf_rotl(word, 33 - s) & 0xE) | 1);
        o[u] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq1_m)
GGUF_MATMUL_FACTORED_KERNELS(iq1_m)
