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
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 4 runs, no
// offset): w = a q with q = kvalues_iq4nl[nibble] and a = d * (ls - 32) of its group, the exact product
// dequantize_iq4_xs computes. Quad j of part p holds elements 64j + 4p .. + 3 of group g = 2j + p / 8:
// the low (p % 8 < 4) or high nibbles of qs bytes 16g + 4(p % 4) ...
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq4_xs *, ushort part, uint j) {
    return 64 * j + 4 * part;
}

// Lane l holds kvalues_iq4nl[l % 16]: codes are looked up by simd_shuffle.
GGUF_MV_INLINE float gguf_mv_table(device const block_iq4_xs *, ushort lane) {
    return float(kvalues_iq4nl[lane % 16]);
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq4_xs *b, ushort part, float table, thread float4 *q,
                                  thread float *a, thread float *o) {
    const float d = float(b->d);
    const uint hi = part / 8;
    const uint shift = 4 * ((part % 8) / 4);
    const uint scales_l = *reinterpret_cast<device const uint *>(b->scales_l);
    const uint scales_h = b->scales_h;
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + 16 * hi + 4 * (part % 4));
#pragma unroll
    for (uint j = 0; j < 4; ++j) {
        // group g = 2j + hi: its 4-bit low scale is nibble g of scales_l, its 2 high bits bits 2g of scales_h
        const uchar4 n = as_type<uchar4>((qs[8 * j] >> shift) & 0x0F0F0F0Fu);
        q[j].x = simd_shuffle(table, ushort(n.x));
        q[j].y = simd_shuffle(table, ushort(n.y));
        q[j].z = simd_shuffle(table, ushort(n.z));
        q[j].w = simd_shuffle(table, ushort(n.w));
        const uint g = 2 * j + hi;
        const int ls = int(((scales_l >> (4 * g)) & 0xF) | (((scales_h >> (2 * g)) & 3) << 4));
        a[j] = d * float(ls - 32);
        o[j] = 0.0f;
    }
}
#endif

GGUF_DEQUANT_KERNELS(iq4_xs)
GGUF_MATMUL_FACTORED_KERNELS(iq4_xs)
