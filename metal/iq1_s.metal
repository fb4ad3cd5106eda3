#include "gguf_common.h"
#include "gguf_tables.h"

// IQ1_S: 256 elements in 50 bytes: d (half), qs[32], qh[8] (u16, at byte 34). Group g, h = qh[g]:
// 8-element sub-group l indexes iq1s_grid (values -1/0/1) with qs[4g + l] | ((h >> 3l) & 7) << 8;
// dl = d * (2 * ((h >> 12) & 7) + 1); delta = -IQ1S_DELTA if bit 15 of h is set, else +IQ1S_DELTA;
// y = dl * (grid + delta).
struct block_iq1_s {
    half d;
    uchar qs[32];
    ushort qh[8];
};
static_assert(sizeof(block_iq1_s) == 50, "IQ1_S block is 50 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq1_s(device const block_iq1_s *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const uint h = b->qh[sub];
    const float dl = d * float(2 * int((h >> 12) & 7) + 1);
    const float delta = gguf_sign(h, 15) * IQ1S_DELTA;  // arithmetic, not a select: no branch on random bits
    uint rows[4];
    for (int l = 0; l < 4; ++l) {
        rows[l] = uint(b->qs[4 * sub + l]) | (((h >> (3 * l)) & 7) << 8);
    }
    gguf_grid_values<4>(iq1s_grid, rows, 0, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = dl * (y[j] + delta);
    }
}

GGUF_DEQUANT_KERNELS(iq1_s)
GGUF_MATMUL_KERNELS(iq1_s)
