#include "gguf_common.h"

// Q4_K: 256 elements in 144 bytes, 8 sub-blocks of 32. Sub-block j reads qs[32 (j / 2) ...], low nibbles
// if j is even, high if odd. 6-bit scale and min per sub-block (ggml's get_scale_min_k4):
//   j < 4:  sc = scales[j] & 63,                               m = scales[j + 4] & 63
//   j >= 4: sc = lo(scales[j + 4]) | (scales[j - 4] >> 6) << 4, m = hi(scales[j + 4]) | (scales[j] >> 6) << 4
// y = (d * sc) * q - (dmin * m) (products exact; only the difference rounds).
struct block_q4_k {
    half d;
    half dmin;
    uchar scales[12];
    uchar qs[128];
};
static_assert(sizeof(block_q4_k) == 144, "Q4_K block is 144 bytes");

inline void gguf_scale_min_k4(int j, device const uchar *s, thread int &sc, thread int &m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Sub-block j: elements 32j .. 32j + 31.
inline void dequantize_q4_k(device const block_q4_k *b, ushort sub, thread float *y) {
    int sc, m;
    gguf_scale_min_k4(sub, b->scales, sc, m);
    const float d1 = float(b->d) * float(sc);
    const float m1 = float(b->dmin) * float(m);
    gguf_unpack_bits<32>(b->qs + 32 * (sub / 2), 4 * (sub % 2), 0xF, y);
    for (int l = 0; l < 32; ++l) {
        y[l] = d1 * y[l] - m1;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 2 runs, with
// offset): w = a q + o with q the nibble, a = d * sc and o = -(dmin * m) of its sub-block, the exact
// products dequantize_q4_k computes (it rounds a q + o once: y = d1 * q - m1). Part p = 4g + i takes
// elements 16t + 4i .. + 3 (t = 0, 1) of sub-blocks 2g (run 0) and 2g + 1 (run 1): quad j = 2v + t is
// elements 64g + 32v + 16t + 4i .., the nibbles v of qs bytes 32g + 16t + 4i .. (one word per t).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q4_k *, ushort part, uint j) {
    return 64 * (part / 4) + 16 * j + 4 * (part % 4);
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q4_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint g = part / 4;
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + 32 * g + 4 * (part % 4));
    const uint w0 = qs[0], w1 = qs[4];
    const float4 scm = float4(as_type<uchar4>(gguf_mv_scale_min_k4(b->scales, g)));  // sc(2g + v), m(2g + v)
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
#pragma unroll
    for (uint v = 0; v < 2; ++v) {
        q[2 * v] = float4(as_type<uchar4>((w0 >> (4 * v)) & 0x0F0F0F0Fu));
        q[2 * v + 1] = float4(as_type<uchar4>((w1 >> (4 * v)) & 0x0F0F0F0Fu));
        a[v] = dm.x * scm[v];
        o[v] = -(dm.y * scm[2 + v]);
    }
}
#endif

GGUF_DEQUANT_KERNELS(q4_k)
GGUF_MATMUL_FACTORED_KERNELS(q4_k)
