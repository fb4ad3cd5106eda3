#include "gguf_common.h"
#include "gguf_tables.h"

// IQ4_NL: 32 elements in 18 bytes. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble. y = d * kvalues_iq4nl[nibble].
struct block_iq4_nl {
    half d;
    uchar qs[16];
};
static_assert(sizeof(block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_iq4_nl(device const block_iq4_nl *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_nibble_lookup<16>(kvalues_iq4nl, b->qs, 4 * sub, d, y);
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 1 quad, 1 run, no
// offset): w = a q with q = kvalues_iq4nl[nibble] and a = d, the exact product dequantize_iq4_nl computes.
// Part p holds elements 4p .. 4p + 3: the low nibbles of qs bytes 4p .. (p < 4) or the high nibbles of
// bytes 4(p - 4) .. (p >= 4); blocks are 2-byte aligned (gguf_mv_word).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_iq4_nl *, ushort part, uint) {
    return 4 * part;
}

// Lane l holds kvalues_iq4nl[l % 16]: codes are looked up by simd_shuffle.
GGUF_MV_INLINE float gguf_mv_table(device const block_iq4_nl *, ushort lane) {
    return float(kvalues_iq4nl[lane % 16]);
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_iq4_nl *b, ushort part, float table, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uchar4 n = as_type<uchar4>((gguf_mv_word(b->qs + 4 * (part % 4)) >> (4 * (part / 4))) & 0x0F0F0F0Fu);
    q[0] = float4(simd_shuffle(table, ushort(n.x)), simd_shuffle(table, ushort(n.y)),
                  simd_shuffle(table, ushort(n.z)), simd_shuffle(table, ushort(n.w)));
    a[0] = float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(iq4_nl)
GGUF_MATMUL_FACTORED_KERNELS(iq4_nl)
