#include "gguf_common.h"

// TQ1_0: 256 elements in 54 bytes. Each qs byte holds 5 base-3 digits, each qh byte 4, as a fixed-point
// fraction: digit n of byte x is t = (((x * 3^n) & 0xFF) * 3) >> 8 in {0, 1, 2}; y = (t - 1) * d.
// Order: qs[0..31] x 5 digits -> elements 32n + m; qs[32..47] x 5 digits -> 160 + 16n + m;
// qh[0..3] x 4 digits -> 240 + 4n + m.
struct block_tq1_0 {
    uchar qs[48];
    uchar qh[4];
    half d;
};
static_assert(sizeof(block_tq1_0) == 54, "TQ1_0 block is 54 bytes");

inline float tq1_0_value(uint x, uint pow3, float d) {
    const uint q = (x * pow3) & 0xFF;
    return float(int((q * 3) >> 8) - 1) * d;
}

// Sub-block s: elements 32s .. 32s + 31. s 0..4: digit s of qs[0..31]; s 5, 6: digits 2(s - 5) and
// 2(s - 5) + 1 of qs[32..47]; s 7: digit 4 of qs[32..47], then the 16 qh digits.
inline void dequantize_tq1_0(device const block_tq1_0 *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const uint pow3[5] = {1, 3, 9, 27, 81};
    uint x[32];
    if (sub < 5) {
        gguf_widen_bytes<32>(b->qs, x);
        for (int m = 0; m < 32; ++m) {
            y[m] = tq1_0_value(x[m], pow3[sub], d);
        }
    } else if (sub < 7) {
        const int n = 2 * (sub - 5);
        gguf_widen_bytes<16>(b->qs + 32, x);
        for (int m = 0; m < 16; ++m) {
            y[m] = tq1_0_value(x[m], pow3[n], d);
            y[16 + m] = tq1_0_value(x[m], pow3[n + 1], d);
        }
    } else {
        gguf_widen_bytes<16>(b->qs + 32, x);
        for (int m = 0; m < 16; ++m) {
            y[m] = tq1_0_value(x[m], pow3[4], d);
        }
        for (int n = 0; n < 4; ++n) {
            for (int m = 0; m < 4; ++m) {
                y[16 + 4 * n + m] = tq1_0_value(b->qh[m], pow3[n], d);
            }
        }
    }
}

GGUF_DEQUANT_KERNELS(tq1_0)
GGUF_MATMUL_KERNELS(tq1_0)
