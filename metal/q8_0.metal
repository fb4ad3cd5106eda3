#include "gguf_common.h"

// Q8_0: 32 elements in 34 bytes: one signed byte per element. y = q * d.
struct block_q8_0 {
    half d;
    int8_t qs[32];
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");

// Sub-block s: elements 16s .. 16s + 15.
inline void dequantize_q8_0(device const block_q8_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    gguf_scale_int8<16>(b->qs + 16 * sub, d, y);
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 1 quad, 1 run, no
// offset): w = a q with q the signed byte and a = d, the exact product dequantize_q8_0 computes. Part p
// holds elements 4p .. 4p + 3, its qs bytes read as 16-bit words (blocks are 2-byte aligned).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_q8_0 *, ushort part, uint) {
    return 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_q8_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    device const ushort *qs = reinterpret_cast<device const ushort *>(b->qs + 4 * part);
    q[0] = float4(as_type<char4>(uint(qs[0]) | (uint(qs[1]) << 16)));
    a[0] = float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(q8_0)
GGUF_MATMUL_FACTORED_KERNELS(q8_0)
