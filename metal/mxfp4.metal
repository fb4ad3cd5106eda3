#include "gguf_common.h"
#include "gguf_tables.h"

// MXFP4: 32 elements in 17 bytes: an E8M0 exponent byte e, then 16 bytes of E2M1 nibbles. Element j < 16
// is the low nibble of qs[j], element j + 16 its high nibble. y = kvalues_fp4[nibble] * s(e), where
// kvalues_fp4 holds the E2M1 values doubled and s(e) = 2^(e - 128) is built from bits exactly as ggml's
// ggml_e8m0_to_fp32_half: e >= 2 -> exponent field e - 1; e = 0, 1 -> the f32 subnormals 2^-128, 2^-127.
// e = 0xFF gives 2^127 (not NaN). Index 8 of kvalues_fp4 is 0, so it decodes to +0 like the CPU
// reference (llama.cpp's Metal shader gives -0 there).
// Fast math (or torch.set_flush_denormal on the CPU) may flush the subnormal scales of e = 0, 1 to zero:
// for those blocks every normal result is rebuilt on the exponent bits (the same bits in IEEE arithmetic).
struct block_mxfp4 {
    uchar e;
    uchar qs[16];
};
static_assert(sizeof(block_mxfp4) == 17, "MXFP4 block is 17 bytes");

inline float e8m0_to_fp32_half(uint e) {
    const uint bits = e < 2 ? (0x00200000u << e) : ((e - 1) << 23);
    return as_type<float>(bits);
}

// Sub-block 0: the low nibbles (elements 0..15); sub-block 1: the high nibbles (16..31).
inline void dequantize_mxfp4(device const block_mxfp4 *b, ushort sub, thread float *y) {
    const uint e = b->e;
    const float d = e8m0_to_fp32_half(e);
    const ushort shift = 4 * sub;
    gguf_nibble_lookup<16>(kvalues_fp4, b->qs, shift, d, y);
    if (e < 2) {
        // d is subnormal, and fast math may flush it: every normal result is rebuilt from k * 2^(e - 64),
        // a product of normal floats, with 64 taken off its exponent field.
        const float d_raised = as_type<float>((e + 63) << 23);
        for (int j = 0; j < 16; ++j) {
            const uint bits = as_type<uint>(float(int(kvalues_fp4[(b->qs[j] >> shift) & 0xF])) * d_raised);
            if (((bits >> 23) & 0xFF) > 64) {
                y[j] = as_type<float>(bits - (64u << 23));
            }
        }
    }
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 4 lanes per block, 2 quads, 1 run, no
// offset): w = a q with q = kvalues_fp4[nibble] and a = s(e), the exact product dequantize_mxfp4 computes.
// Part p reads qs bytes 4p .. 4p + 3 (one packed vector: blocks are 17 bytes): quad 0 is their low nibbles
// (elements 4p ..), quad 1 their high nibbles (elements 16 + 4p ..). For e = 0, 1, s(e) is subnormal and
// fast math may flush it: the codes carry 2^-64 and the scale is 2^(e - 64) instead (the same products;
// in IEEE arithmetic the same bits unless a partial sum of q x falls below 2^-62). Such blocks are rare, so
// their codes are scaled only when a lane of the simdgroup has one (every lane calls this together).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_mxfp4 *, ushort part, uint j) {
    return 16 * j + 4 * part;
}

// Lane l holds kvalues_fp4[l % 16]: codes are looked up by simd_shuffle.
GGUF_MV_INLINE float gguf_mv_table(device const block_mxfp4 *, ushort lane) {
    return float(int(kvalues_fp4[lane % 16]));
}

// The run scale of exponent e: s(e), or 2^(e - 64) for e = 0, 1 (with codes scaled by gguf_mv_rescale_codes).
GGUF_MV_INLINE float gguf_mv_mxfp4_scale(uint e) {
    return e < 2 ? as_type<float>((e + 63) << 23) : e8m0_to_fp32_half(e);
}

// The codes alone (the scale comes from gguf_mv_codes or gguf_mv_row_scales).
GGUF_MV_INLINE void gguf_mv_mxfp4_codes(device const block_mxfp4 *b, ushort part, float table, thread float4 *q) {
    // one load of the part's 4 bytes (a packed vector: byte aligned, as the 17-byte blocks are)
    const packed_uchar4 bytes = *reinterpret_cast<device const packed_uchar4 *>(b->qs + 4 * part);
#pragma unroll
    for (uint i = 0; i < 4; ++i) {
        const uint byte = bytes[i];
        q[0][i] = simd_shuffle(table, ushort(byte & 0xF));
        q[1][i] = simd_shuffle(table, ushort(byte >> 4));
    }
}

GGUF_MV_INLINE void gguf_mv_lane_codes(device const block_mxfp4 *b, ushort part, float table, thread float4 *q,
                                       thread float *, thread float *) {
    gguf_mv_mxfp4_codes(b, part, table, q);
}

// The codes of a block with a subnormal scale carry 2^-64.
GGUF_MV_INLINE void gguf_mv_rescale_codes(device const block_mxfp4 *b, ushort, thread float4 *q) {
    const float unit = b->e < 2 ? 0x1p-64f : 1.0f;
    q[0] *= unit;
    q[1] *= unit;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_mxfp4 *b, ushort part, float table, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint e = b->e;
    gguf_mv_mxfp4_codes(b, part, table, q);
    if (simd_any(e < 2)) {
        gguf_mv_rescale_codes(b, part, q);
    }
    a[0] = gguf_mv_mxfp4_scale(e);
    o[0] = 0.0f;
}

// The mat-vec tier's scales (gguf_mv_lane_scales): lane p of a block decodes the exponents of rows p, p + 4, ...
// (R / 4 instead of R) and takes row r's scale from lane r % 4 of its block; one vote per step (not per row and
// block) finds the rare subnormal scales.
template <>
struct gguf_mv_lane_scales<block_mxfp4> {
    enum { value = 1 };
};

template <uint R, int RUNS>
GGUF_MV_INLINE bool gguf_mv_row_scales(device const block_mxfp4 *const thread *rows, uint ib, ushort part,
                                       ushort lane, thread float a[][RUNS], thread float o[][RUNS]) {
    static_assert(R % 4 == 0 && RUNS == 1, "four rows per lane of a block, one run");
    float mine[R / 4][1];
    bool subnormal = false;
#pragma unroll
    for (uint k = 0; k < R / 4; ++k) {
        const uint e = (gguf_mv_row_of_quarter(rows, 4 * k, part) + ib)->e;
        subnormal = subnormal || e < 2;
        mine[k][0] = gguf_mv_mxfp4_scale(e);
    }
#pragma unroll
    for (uint r = 0; r < R; ++r) {
        o[r][0] = 0.0f;
    }
    gguf_mv_share_row_scales<R, RUNS, 4>(mine, part, lane, a);
    return simd_any(subnormal);
}
#endif

GGUF_DEQUANT_KERNELS(mxfp4)
GGUF_MATMUL_FACTORED_KERNELS(mxfp4)
