#include "gguf_common.h"
#include "gguf_tables.h"

// IQ4_XS: 256 elements in 136 bytes: d (half), scales_h (u16), scales_l[4], qs[128]. Group g:
// ls = ((scales_l[g/2] >> 4(g%2)) & 0xF) | ((scales_h >> 2g) & 3) << 4; dl = d * (ls - 32);
// bytes qs[16g .. 16g+15]: element j from the low nibble, j + 16 from the high nibble;
// y = dl * kvalues_iq4nl[nibble].
struct block_iq4_xs {
    half d;
    ushort scales_h;
    uchar scales_l[4];
    uchar qs[128];
};
static_assert(sizeof(block_iq4_xs) == 136, "IQ4_XS block is 136 bytes");

// Sub-block `sub` is group `sub` (elements 32 * sub .. 32 * sub + 31).
inline void dequantize_iq4_xs(device const block_iq4_xs *b, ushort sub, thread float *y) {
    const float d = float(b->d);
    const int ls = ((b->scales_l[sub / 2] >> (4 * (sub & 1))) & 0xF) | (((b->scales_h >> (2 * sub)) & 3) << 4);
    const float dl = d * float(ls - 32);
    gguf_nibble_lookup_both<16>(kvalues_iq4nl, b->qs + 16 * sub, dl, y);  // low nibbles: elements 0..15, high: 16..31
}

GGUF_DEQUANT_KERNELS(iq4_xs)
GGUF_MATMUL_KERNELS(iq4_xs)
