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
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, with
// offset), as Q4_K's: w = a q + o with q the 5-bit value, a = d * sc and o = -(dmin * m) of its sub-block,
// the exact products dequantize_q5_k computes (it rounds a q + o once). Part p = 4g + i takes elements
// 16t + 4i .. + 3 (t = 0, 1) of sub-blocks 2g (run 0) and 2g + 1 (run 1): quad j = 2v + t is elements
// 64g + 32v + 16t + 4i .., the nibbles v of qs bytes 32g + 16t + 4i .., fifth bits from qh bytes
// 16t + 4i .. (bit 2g + v).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q5_k *, ushort part, uint j) {
    return 64 * (part / 4) + 16 * j + 4 * (part % 4);
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q5_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint g = part / 4;
    // the lane's offset in a block is computed once (one address addition per row and block)
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + (32 * g + 4 * (part % 4)));
    device const uint *qh = reinterpret_cast<device const uint *>(b->qh + 4 * (part % 4));
    const uint w[2] = {qs[0], qs[4]};
    const uint h[2] = {qh[0] >> (2 * g), qh[4] >> (2 * g)};
    const float4 scm = float4(as_type<uchar4>(gguf_mv_scale_min_k4(b->scales, g)));  // sc(2g + v), m(2g + v)
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
#pragma unroll
    for (uint v = 0; v < 2; ++v) {
#pragma unroll
        for (uint t = 0; t < 2; ++t) {
            const uint fifth = ((h[t] >> v) & 0x01010101u) << 4;
            q[2 * v + t] = float4(as_type<uchar4>(((w[t] >> (4 * v)) & 0x0F0F0F0Fu) | fifth));
        }
        a[v] = dm.x * scm[v];
        o[v] = -(dm.y * scm[2 + v]);
    }
}

// The mat-vec tier's scales and offsets: decoded by the lanes of a block together (gguf_mv_row_scales_k4).
template <>
struct gguf_mv_lane_scales<block_q5_k> {
    enum { value = 1 };
};

template <uint R, int RUNS>
GGUF_MV_INLINE bool gguf_mv_row_scales(device const block_q5_k *const thread *rows, uint ib, ushort part,
                                       ushort lane, thread float a[][RUNS], thread float o[][RUNS]) {
    return gguf_mv_row_scales_k4<R, RUNS>(rows, ib, part, lane, a, o);
}
#endif

GGUF_DEQUANT_KERNELS(q5_k)
GGUF_MATMUL_FACTORED_KERNELS(q5_k)
