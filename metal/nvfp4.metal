#include "gguf_common.h"
#include "gguf_tables.h"

// NVFP4: 64 elements in 36 bytes: four UE4M3 scale bytes (one per 16-element sub-block), then 32 bytes of
// E2M1 nibbles. Sub-block s reads qs[8s .. 8s + 7]: low nibbles -> elements 16s + 0..7, high nibbles ->
// 16s + 8..15. y = kvalues_fp4[nibble] * u(d[s]), u = ggml_ue4m3_to_fp32 (the UE4M3 value times 0.5).
struct block_nvfp4 {
    uchar d[4];
    uchar qs[32];
};
static_assert(sizeof(block_nvfp4) == 36, "NVFP4 block is 36 bytes");

// ggml_ue4m3_to_fp32: 0x00 and 0x7F -> 0; exponent bits 3..6, mantissa bits 0..2, bias 7; bit 7 is
// ignored. Exponent 0: man * 2^-9; else (1 + man / 8) * 2^(exp - 7); then * 0.5. Every value is exact
// in f32, so it is assembled from bits: the halving lowers the f32 exponent field (exp + 120) by one.
inline float ue4m3_to_fp32_half(uint x) {
    if (x == 0 || x == 0x7F) {
        return 0.0f;
    }
    const uint e = (x >> 3) & 0xF;
    const uint man = x & 0x7;
    if (e == 0) {
        return float(man) * 0.0009765625f;  // man * 2^-9 * 0.5, exact
    }
    return as_type<float>(((e + 119) << 23) | (man << 20));
}

inline void dequantize_nvfp4(device const block_nvfp4 *b, ushort sub, thread float *y) {
    const float d = ue4m3_to_fp32_half(b->d[sub]);
    device const uchar *qs = b->qs + 8 * sub;
    gguf_nibble_lookup_both<8>(kvalues_fp4, qs, d, y);  // low nibbles: elements 16s + 0..7, high: 16s + 8..15
}

#ifdef GGUF_METAL_MATMUL
// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 2 quads, 1 run, no
// offset): w = a q with q = kvalues_fp4[nibble] and a = u(d[s]), the exact product dequantize_nvfp4
// computes. Part p reads qs bytes 8s + 4(p % 2) .. + 3 of sub-block s = p / 2 (one 32-bit load: blocks are
// 36 bytes): quad 0 is their low nibbles (elements 16s + 4(p % 2) ..), quad 1 their high nibbles
// (16s + 8 + 4(p % 2) ..), so 8 lanes read the block's 64 contiguous x values.
GGUF_MV_INLINE uint gguf_mv_quad(device const block_nvfp4 *, ushort part, uint j) {
    return 16 * (part / 2) + 8 * j + 4 * (part % 2);
}

// Lane l holds kvalues_fp4[l % 16]: codes are looked up by simd_shuffle.
GGUF_MV_INLINE float gguf_mv_table(device const block_nvfp4 *, ushort lane) {
    return float(int(kvalues_fp4[lane % 16]));
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_nvfp4 *b, ushort part, float table, thread float4 *q,
                                  thread float *a, thread float *o) {
    const uint w = *reinterpret_cast<device const uint *>(b->qs + 4 * part);
#pragma unroll
    for (uint j = 0; j < 2; ++j) {
        const uchar4 n = as_type<uchar4>((w >> (4 * j)) & 0x0F0F0F0Fu);
        q[j] = float4(simd_shuffle(table, ushort(n.x)), simd_shuffle(table, ushort(n.y)),
                      simd_shuffle(table, ushort(n.z)), simd_shuffle(table, ushort(n.w)));
    }
    a[0] = ue4m3_to_fp32_half(b->d[part / 2]);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(nvfp4)
GGUF_MATMUL_FACTORED_KERNELS(nvfp4)
