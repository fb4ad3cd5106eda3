#include "gguf_common.h"
#include "gguf_tables.h"

// IQ4_XS: 256 elements in 136 bytes: d (half), scales_h (u16), scales_l[4], qs[128]. Group g:
// ls = ((scales_l[g/2] >> 4(g%2)) & 0xF) | ((scales_h >> 2g) & 3) << 4; dl = d * (ls - 32);
// bytes qs[16g .. 16g+15]: element j from the low nibble, j + 16 from the high nibble;
// y = dl * kvalues_iq4nl[nibble].
struct block_iq4_xs {
    half d;
    ushort scales_h;
    uchar scales_l[4];
    uchar qs[128];
};
static_assert(sizeof(block_iq4_xs) == 136, "IQ4_XS block is 136 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq4_xs(device const block_iq4_xs *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const int ls = ((b->scales_l[sub / 2] >> (4 * (sub & 1))) & 0xF) | (((b->scales_h >> (2 * sub)) & 3) << 4);
    const float dl = d * float(ls - 32);
    gguf_nibble_lookup_both<16>(kvalues_iq4nl, b->qs + 16 * sub, dl, y);  // low nibbles: elements 0..15, high: 16..31
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, no
// offset): w = a q with q = kvalues_iq4nl[nibble] and a = d * (ls - 32) of its group, the exact product
// dequantize_iq4_xs computes. Part p = 4g + i takes elements 16t + 4i .. + 3 (t = 0, 1) of groups 2g
// (run 0) and 2g + 1 (run 1): quad j = 2v + t is elements 64g + 32v + 16t + 4i .., the nibbles t of qs
// bytes 16(2g + v) + 4i .. (one word per group).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq4_xs *, ushort part, uint j) {
    return 64 * (part / 4) + 16 * j + 4 * (part % 4);
}

// Lane l holds kvalues_iq4nl[l % 16]: codes are looked up by simd_shuffle.
GGUF_MV_INLINE float gguf_mv_table(device const block_iq4_xs *, ushort lane) {
    return float(kvalues_iq4nl[lane % 16]);
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq4_xs *b, ushort part, float table, thread float4 *q,
                                  thread float *a, thread float *o) {
    const float d = float(b->d);
    const uint g = part / 4;
    const uint scales_l = *reinterpret_cast<device const uint *>(b->scales_l);
    const uint scales_h = b->scales_h;
    // the lane's offset in a block is computed once (one address addition per row and block)
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + (32 * g + 4 * (part % 4)));
#pragma unroll
    for (uint v = 0; v < 2; ++v) {
        const uint word = qs[4 * v];
#pragma unroll
        for (uint t = 0; t < 2; ++t) {
            const uchar4 n = as_type<uchar4>((word >> (4 * t)) & 0x0F0F0F0Fu);
            q[2 * v + t].x = simd_shuffle(table, ushort(n.x));
            q[2 * v + t].y = simd_shuffle(table, ushort(n.y));
            q[2 * v + t].z = simd_shuffle(table, ushort(n.z));
            q[2 * v + t].w = simd_shuffle(table, ushort(n.w));
        }
        // group 2g + v: its 4-bit low scale is nibble 2g + v of scales_l, its 2 high bits bits 2(2g + v) of scales_h
        const uint group = 2 * g + v;
        const int ls = int(((scales_l >> (4 * group)) & 0xF) | (((scales_h >> (2 * group)) & 3) << 4));
        a[v] = d * float(ls - 32);
        o[v] = 0.0f;
    }
}

// The mat-vec tier's scales (gguf_mv_lane_scales): lane p of a block decodes groups 2j, 2j + 1 (j = p % 4) of
// rows p / 4, p / 4 + 4, ... (R / 2 scales instead of 2 R), and takes a of its groups 2g, 2g + 1 in row r from
// lane 4 (r % 4) + g of its block.
template <>
struct gguf_mv_lane_scales<block_iq4_xs> {
    enum { value = 1 };
};

template <uint R, int RUNS>
GGUF_MV_INLINE bool gguf_mv_row_scales(device const block_iq4_xs *const thread *rows, uint ib, ushort part,
                                       ushort lane, thread float a[][RUNS], thread float o[][RUNS]) {
    static_assert(R % 4 == 0 && RUNS == 2, "four rows per group of 4 lanes, two groups per lane");
    const uint j = part % 4;
    const uint quarter = part / 4;
    float mine[R / 4][2];
#pragma unroll
    for (uint k = 0; k < R / 4; ++k) {
        device const block_iq4_xs *b = gguf_mv_row_of_quarter(rows, 4 * k, quarter) + ib;
        const float d = float(b->d);
        const uint low = b->scales_l[j];              // groups 2j, 2j + 1: its nibbles
        const uint high = uint(b->scales_h) >> (4 * j);  // and bits 0-1, 2-3 of this
        const int ls0 = int((low & 0xF) | ((high & 3) << 4));
        const int ls1 = int((low >> 4) | ((high & 0xC) << 2));
        mine[k][0] = d * float(ls0 - 32);
        mine[k][1] = d * float(ls1 - 32);
    }
#pragma unroll
    for (uint r = 0; r < R; ++r) {
#pragma unroll
        for (uint v = 0; v < 2; ++v) {
            o[r][v] = 0.0f;
        }
    }
    gguf_mv_share_row_scales<R, RUNS, 16>(mine, part, lane, a);
    return false;
}
#endif

GGUF_DEQUANT_KERNELS(iq4_xs)
GGUF_MATMUL_FACTORED_KERNELS(iq4_xs)
