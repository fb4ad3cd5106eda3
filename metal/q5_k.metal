#include "gguf_common.h"

// Q5_K: 256 elements in 176 bytes, 8 sub-blocks of 32. As Q4_K (same scales, same nibbles), plus a 5th
// bit: element l of sub-block j uses bit j of qh[l]. y = (d * sc) * q - (dmin * m).
struct block_q5_k {
    half d;
    half dmin;
    uchar scales[12];
    uchar qh[32];
    uchar qs[128];
};
static_assert(sizeof(block_q5_k) == 176, "Q5_K block is 176 bytes");

// ggml's get_scale_min_k4 (the same packing as Q4_K).
inline void gguf_scale_min_k5(int j, device const uchar *s, thread int &sc, thread int &m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Sub-block j: elements 32j .. 32j + 31.
inline void dequantize_q5_k(device const block_q5_k *b, ushort sub, thread float *y) {
    int sc, m;
    gguf_scale_min_k5(sub, b->scales, sc, m);
    const float d1 = float(b->d) * float(sc);
    const float m1 = float(b->dmin) * float(m);
    float h[32];
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 2), 4 * (sub % 2), 0xF, y);
    gguf_unpack_bits<32>(b->qh, sub, 1, h);
    for (int l = 0; l < 32; ++l) {
        // The 5-bit value from its low 4 bits and its fifth: small integers, exact in float.
        y[l] = d1 * (y[l] + 16.0f * h[l]) - m1;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 4 runs, with
// offset), as Q4_K's: w = a q + o with q the 5-bit value, a = d * sc and o = -(dmin * m) of its sub-block,
// the exact products dequantize_q5_k computes (it rounds a q + o once). Quad j of part p holds elements
// 64j + 4p .. 64j + 4p + 3 of sub-block 2j + p / 8: nibbles of qs bytes 32j + 4(p % 8) .. (low for
// p < 8, high for p >= 8), fifth bits from qh bytes 4(p % 8) .. (bit 2j + p / 8).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q5_k *, ushort part, uint j) {
    return 64 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q5_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint hi = part / 8;
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + 4 * (part % 8));
    const uint qh = *reinterpret_cast<device const uint *>(b->qh + 4 * (part % 8));
    // gguf_scale_min_k5 on the 12 scale bytes as words (as Q4_K's gguf_mv_codes).
    device const uint *s = reinterpret_cast<device const uint *>(b->scales);
    const uint s0 = s[0], s1 = s[1], s2 = s[2];
    const uint sc01 = s0 & 0x3F3F3F3Fu;
    const uint m01 = s1 & 0x3F3F3F3Fu;
    const uint sc23 = (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u);
    const uint m23 = ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u);
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
#pragma unroll
    for (uint j = 0; j < 4; ++j) {
        const uint fifth = ((qh >> (2 * j + hi)) & 0x01010101u) << 4;
        q[j] = float4(as_type<uchar4>(((qs[8 * j] >> (4 * hi)) & 0x0F0F0F0Fu) | fifth));
        const uint shift = 8 * (2 * (j % 2) + hi);
        a[j] = dm.x * float(((j < 2 ? sc01 : sc23) >> shift) & 0xFF);
        o[j] = -(dm.y * float(((j < 2 ? m01 : m23) >> shift) & 0xFF));
    }
}
#endif

GGUF_DEQUANT_KERNELS(q5_k)
GGUF_MATMUL_FACTORED_KERNELS(q5_k)
