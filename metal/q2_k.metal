#include "gguf_common.h"

// Q2_K: 256 elements in 84 bytes, 16 sub-blocks of 16. Element e = 128h + 32g + l (h 0..1, g 0..3,
// l 0..31) has q = (qs[32h + l] >> 2g) & 3. Sub-block e / 16 uses sc = scales[e / 16]:
// dl = d * lo(sc), ml = dmin * hi(sc), y = dl * q - ml (products exact; only the difference rounds).
struct block_q2_k {
    uchar scales[16];
    uchar qs[64];
    half d;
    half dmin;
};
static_assert(sizeof(block_q2_k) == 84, "Q2_K block is 84 bytes");

// Sub-block s: elements 16s .. 16s + 15, i.e. h = s / 8, g = (s % 8) / 2, l = 16 (s % 2) + j.
inline void dequantize_q2_k(device const block_q2_k *b, ushort sub, thread float *y) {
    const uchar sc = b->scales[sub];
    const float dl = float(b->d) * float(int(sc & 0xF));
    const float ml = float(b->dmin) * float(int(sc >> 4));
    const int shift = 2 * ((sub % 8) / 2);
    gguf_unpack_bits<16>(b->qs + 32 * (sub / 8) + 16 * (sub % 2), shift, 3, y);
    for (int j = 0; j < 16; ++j) {
        y[j] = dl * y[j] - ml;
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 16 lanes per block, 4 quads, 4 runs, with
// offset): w = a q + o with q the 2-bit value, a = d * lo(sc) and o = -(dmin * hi(sc)) of its sub-block, the
// exact products dequantize_q2_k computes (it rounds a q + o once). Quad j of part p holds elements
// e = 64j + 4p .. + 3: h = j / 2, g = 2(j % 2) + p / 8, l = 4(p % 8) ..: qs bytes 32h + l .. >> 2g; sub-block
// 4j + p / 4. Blocks are 4-byte aligned (84 bytes): 32-bit loads.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q2_k *, ushort part, uint j) {
    return 64 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q2_k *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint hi = part / 8;
    device const uint *qs = reinterpret_cast<device const uint *>(b->qs + 4 * (part % 8));
    const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
#pragma unroll
    for (uint j = 0; j < 4; ++j) {
        q[j] = float4(as_type<uchar4>((qs[8 * (j / 2)] >> (2 * (2 * (j % 2) + hi))) & 0x03030303u));
        const uint sc = b->scales[4 * j + part / 4];
        a[j] = dm.x * float(sc & 0xF);
        o[j] = -(dm.y * float(sc >> 4));
    }
}
#endif

GGUF_DEQUANT_KERNELS(q2_k)
GGUF_MATMUL_FACTORED_KERNELS(q2_k)
