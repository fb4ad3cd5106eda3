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

GGUF_DEQUANT_KERNELS(mxfp4)
GGUF_MATMUL_KERNELS(mxfp4)
