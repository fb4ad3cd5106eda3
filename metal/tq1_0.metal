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

#ifdef GGUF_METAL_MATMUL
// 3^n for a digit n in 0..4, from n's bits (selects and multiplications, no table: a lane's powers are
// loop-invariant and stay in registers).
GGUF_MV_INLINE uint gguf_mv_pow3(uint n) {
    return (n & 1 ? 3u : 1u) * (n & 2 ? 9u : 1u) * (n & 4 ? 81u : 1u);
}

// Digit n (pow3 = 3^n) of each byte of a word, minus 1: the codes of 4 elements, from the word's bytes 0, 2
// (even = w & 0x00FF00FF) and 1, 3 (odd = (w >> 8) & 0x00FF00FF) in 16-bit fields. Per field, a byte times
// 3^n (<= 81), its low 8 bits times 3: bits 8, 9 hold the digit t and bits 0..7 stay below 768, so adding
// 0x7F00 sets the field's high byte to t + 0x7F without a carry out, and ^ 0x8000 makes it t - 1 as a signed
// byte. The codes are read from those high bytes (bytes 1, 3 of each word): no repacking.
GGUF_MV_INLINE uint gguf_mv_trit_field(uint fields, uint pow3) {
    return ((((fields * pow3) & 0x00FF00FFu) * 3u) + 0x7F007F00u) ^ 0x80008000u;
}

// The codes of 4 elements from the high bytes (1, 3) of the even and odd fields gguf_mv_trit_field makes.
GGUF_MV_INLINE float4 gguf_mv_trit_codes(uint even, uint odd) {
    const char4 e = as_type<char4>(even);
    const char4 o = as_type<char4>(odd);
    return float4(float(e.y), float(o.y), float(e.w), float(o.w));
}

GGUF_MV_INLINE float4 gguf_mv_trits(uint even, uint odd, uint pow3) {
    return gguf_mv_trit_codes(gguf_mv_trit_field(even, pow3), gguf_mv_trit_field(odd, pow3));
}

// Digits 0..4 of each byte of a word in order (codes q[0..4]), by the recurrence q_0 = x,
// q_{n+1} = 3 q_n mod 256 (x 3^n mod 256 is the fraction whose top digit is digit n): the field
// 3 q_n + 0x7F00 holds digit n + 0x7F in its high byte and q_{n+1} in its low byte, so one multiply-add serves
// both (no power of 3 per digit, no separate mask before the multiplication).
GGUF_MV_INLINE void gguf_mv_trits5(uint even, uint odd, thread float4 *q) {
#pragma unroll
    for (uint n = 0; n < 5; ++n) {
        const uint e = even * 3u + 0x7F007F00u;
        const uint o = odd * 3u + 0x7F007F00u;
        q[n] = gguf_mv_trit_codes(e ^ 0x80008000u, o ^ 0x80008000u);
        even = e & 0x00FF00FFu;
        odd = o & 0x00FF00FFu;
    }
}

// The factored form of the mat-vec tier (launch.MV_FACTORED: 8 lanes per block, 8 quads, 1 run, no
// offset): w = a q with q = t - 1 and a = d, the exact product dequantize_tq1_0 computes. Quad j of part p
// holds elements e = 32j + 4p .. + 3, read from 4 bytes at one digit: j < 5: qs bytes 4p .., digit j;
// j = 5, 6 (160 <= e < 224): qs bytes 32 + 4(p % 4) .., digit 2(j - 5) + p / 4; j = 7: for p < 4 (e < 240)
// those bytes at digit 4, else (e >= 240) the qh bytes at digit p - 4. So a lane reads 3 words per block
// for 32 elements (the per-block loads, splits and loop work serve twice the elements of 4 quads).
// Blocks are 2-byte aligned (gguf_mv_word).
GGUF_MV_INLINE uint gguf_mv_quad(device const block_tq1_0 *, ushort part, uint j) {
    return 32 * j + 4 * part;
}

GGUF_MV_INLINE void gguf_mv_codes(device const block_tq1_0 *b, ushort part, float, thread float4 *q,
                                  thread float *a, thread float *o) {
    // Every lane loads three words (no branches): its own qs word, qs bytes 32 + 4 (p % 4) .. and, for
    // quad 7, those bytes again (p < 4) or the qh bytes (p >= 4).
    const uint hi = part / 4;
    device const uchar *tail = b->qs + 32 + 4 * (part % 4);
    const uint first = gguf_mv_word(b->qs + 4 * part);
    const uint second = gguf_mv_word(tail);
    const uint last = gguf_mv_word(part < 4 ? tail : b->qh);
    const uint first_even = first & 0x00FF00FFu, first_odd = (first >> 8) & 0x00FF00FFu;
    const uint second_even = second & 0x00FF00FFu, second_odd = (second >> 8) & 0x00FF00FFu;
    const uint last_even = last & 0x00FF00FFu, last_odd = (last >> 8) & 0x00FF00FFu;
    gguf_mv_trits5(first_even, first_odd, q);
    q[5] = gguf_mv_trits(second_even, second_odd, gguf_mv_pow3(hi));
    q[6] = gguf_mv_trits(second_even, second_odd, gguf_mv_pow3(2 + hi));
    q[7] = gguf_mv_trits(last_even, last_odd, gguf_mv_pow3(hi ? part - 4 : 4));
    a[0] = float(b->d);
    o[0] = 0.0f;
}
#endif

GGUF_DEQUANT_KERNELS(tq1_0)
GGUF_MATMUL_FACTORED_KERNELS(tq1_0)
