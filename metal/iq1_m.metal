#include "gguf_common.h"
#include "gguf_tables.h"

// IQ1_M: 256 elements in 56 bytes: qs[32], qh[16], scales[8] read as four little-endian u16 words
// sc[0..3] (assembled from bytes). No separate d: its half bits are the top nibbles of sc[0..3]
// (bits 0-3, 4-7, 8-11, 12-15). Group g: dl1 = d * (2 * ((sc[g/2] >> 6(g%2)) & 7) + 1) for the first 16
// elements, dl2 with shift 6(g%2) + 3 for the last 16. 8-element sub-group l uses qh byte
// q = qh[2g + l/2], nibble n = low nibble of q for even l, high for odd l: index
// qs[4g + l] | (n & 7) << 8 into iq1s_grid; n & 8 -> delta = -IQ1S_DELTA, else +IQ1S_DELTA.
// y = dl * (grid + delta).
struct block_iq1_m {
    uchar qs[32];
    uchar qh[16];
    uchar scales[8];
};
static_assert(sizeof(block_iq1_m) == 56, "IQ1_M block is 56 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq1_m(device const block_iq1_m *b, ushort sub, thread float *y) {
    uint sc[4];
    for (int k = 0; k < 4; ++k) {
        sc[k] = uint(b->scales[2 * k]) | (uint(b->scales[2 * k + 1]) << 8);
    }
    const ushort dbits = ushort((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) |
                                (sc[3] & 0xF000));
    const float d = float(as_type<half>(dbits));
    const uint s = sc[sub / 2] >> (6 * (sub & 1));
    const float dl1 = d * float(2 * int(s & 7) + 1);
    const float dl2 = d * float(2 * int((s >> 3) & 7) + 1);
    uint rows[4];
    uint negative = 0;  // bit l: row l's delta is negative
    for (int l = 0; l < 4; ++l) {
        const uint n = (uint(b->qh[2 * sub + l / 2]) >> (4 * (l & 1))) & 0xF;
        rows[l] = uint(b->qs[4 * sub + l]) | ((n & 7) << 8);
        negative |= ((n >> 3) & 1) << l;
    }
    gguf_grid_values<4>(iq1s_grid, rows, 0, y);
    for (int j = 0; j < 32; ++j) {
        y[j] = (j < 16 ? dl1 : dl2) * (y[j] + gguf_sign(negative, j / 8) * IQ1S_DELTA);
    }
}

GGUF_DEQUANT_KERNELS(iq1_m)
GGUF_MATMUL_KERNELS(iq1_m)
