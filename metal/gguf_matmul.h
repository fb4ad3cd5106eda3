// Compute on packed weights (Metal): y = x @ W^T (+ bias) and the mixture-of-experts form, for every type.
//
// Each quantized type's <type>.metal file ends with GGUF_MATMUL_FACTORED_KERNELS(<type>) (float.metal:
// GGUF_MATMUL_FLOAT_KERNELS), which instantiates the kernel templates below: the mat-vec tier on the factored
// access the file defines next to its decode function (gguf_mv_quad, gguf_mv_codes; see gguf_mv_accumulate for
// gguf_factored_core), the matrix tier on that access too (launch.MM_FACTORED) or on the decode function
// dequantize_<type>(block, sub, y) -- the one definition of the format. Launch geometry (the GGUF_MV_* and
// GGUF_MM_* constants) is described once in gguf_dequant/launch.py and generated into gguf_types.h.
//
// Two tiers (contract v2): mat-vec (mul_mv for M <= 8, mul_mv_id for up to 8 tokens) and matrix (mul_mm,
// mul_mm_id). Within a tier one order, so a row's result never depends on M, on its position in the batch or
// on the other slots of mul_mat_id; the tiers differ in bits. The mat-vec tier's orders: the factored order
// (gguf_mv_accumulate for gguf_factored_core) for the quantized types, and for the float types:
//   A weight row of K elements is cut into NS = ceil(K / S) sub-blocks of S = launch.MV_FLOAT_SUB elements
//   (a shorter last one). Lane l (0..31) of a
//   simdgroup owns the sub-blocks s = l, l + 32, l + 64, ... and accumulates, in that order and within a
//   sub-block in element order, acc = fma(w_k, x_k, acc) starting from acc = +0. Then y = the sum of acc
//   over the 32 lanes (gguf_butterfly), then y + bias[n] (one f32 addition, only when a bias is given), then
//   one rounding to the output type. Explicit fma() makes the chain independent of the compiler's contraction choices.
// Error bound (per output, y_exact in float64, u = 2^-24):
//   |y - y_exact| <= gamma_n * (sum_k |w_k x_k| + |bias|),  gamma_n = n u / (1 - n u),
//   n = S * ceil(NS / 32) + 5 (+ 1 with a bias): the longest lane chain (one rounding per fma), then the
//   lane sum (5 additions on a lane's path), then the bias addition. The matrix tier (mul_mm, mul_mm_id): see
//   gguf_mm_tile; its n = 8 ceil(K / 8) + 1 (+ 1). launch.matmul_error_constant(qtype, K, bias, kind) computes both.
//
// Kernels (host names; X = activation type, T = output type, f32/f16/bf16; T is float or X). Contract v2:
// the mat-vec tier (M <= 8) and the matrix tier (M > 8) each keep one order (launch.py states both).
//   mul_mv_<type>_<X>_<T>    the mat-vec tier: 1..8 activation rows per threadgroup (grid y = ceil(M / 8)). A
//                            threadgroup of GGUF_MV_SIMDGROUPS simdgroups; simdgroup g owns weight rows
//                            n0 = (tg.x * GGUF_MV_SIMDGROUPS + g) * R .. + R (R = launch.mv_rows(M)); each lane
//                            decodes each of its sub-blocks (factored: reads each block part's codes)
//                            once into registers and applies it to every activation row of the tile
//                            (weights read once per 8 rows).
//   mul_mm_<type>_<X>_<T>    the matrix tier: a 64 x 64 tile per threadgroup with simdgroup matrices
//                            (gguf_mm_tile below).
//   mul_mv_id_<type>_<X>     out[t, u] = W[ids[t, u]] @ x[t, u % Ux], float32, up to 8 tokens: grid y = T * U
//                            slots, each a one-row mul_mv on the expert chosen on the GPU (the mat-vec tier).
//   mul_mm_id_map_<type>,    more tokens: the slots listed per expert on the GPU, then 64 x 64 tiles over each
//   mul_mm_id_<type>_<X>     expert's slots (the matrix tier); no host sort or sync.
//                            Both: an id outside [0, E) reads nothing and its output row is NaN.
// Buffers: 0 = weight bytes, 1 = x, 2 = bias (float32; any buffer when has_bias == 0) or ids (int32),
// 3 = out, then 64-bit scalars: mul_mv/mul_mm 4 = K, 5 = N, 6 = M, 7 = has_bias; mul_mv_id 4 = K, 5 = N,
// 6 = E, 7 = U, 8 = Ux (x rows per token: 1 or U); mul_mm_id(_map) 4 = the slot map (uint32: E counts, then
// E lists of T * U slots), 5 = K, 6 = N, 7 = E, 8 = U, 9 = Ux, 10 = T * U.
#pragma once

#if defined(GGUF_CPU) || defined(GGUF_NO_MATMUL)

// The CPU backend has its own matmul (cpu/), and the run-time path's dequantize-only library has none:
// the per-type lines expand to nothing there (unless the CPU build defines the macros first).
#ifndef GGUF_MATMUL_FLOAT_KERNELS
#define GGUF_MATMUL_FLOAT_KERNELS(NAME, IN)
#endif
#ifndef GGUF_MATMUL_FACTORED_KERNELS
#define GGUF_MATMUL_FACTORED_KERNELS(NAME)
#endif

#else

// The type files' factored access (gguf_mv_quad, gguf_mv_codes) is Metal code for these kernels only,
// declared GGUF_MV_INLINE: inlined into the unrolled loops that index its arrays (as MLX's METAL_FUNC).
#define GGUF_METAL_MATMUL 1
#define GGUF_MV_INLINE inline __attribute__((always_inline))

// Sub-block s of a weight row into y: one overload per weight type. A quantized type's comes with its
// GGUF_MATMUL_FACTORED_KERNELS line (found by argument-dependent lookup on its block type); the float types' are
// declared here, for the kernel templates to see, and defined by GGUF_MATMUL_FLOAT_KERNELS in float.metal
// over its gguf_load (elements 8s .. min(8s + 8, K)).
inline void gguf_mm_decode(device const float *row, uint s, uint K, thread float *y);
inline void gguf_mm_decode(device const half *row, uint s, uint K, thread float *y);
#if GGUF_BFLOAT
inline void gguf_mm_decode(device const bfloat *row, uint s, uint K, thread float *y);
#endif
// Elements k .. k + 3 of a float row as float32, exactly (float.metal; k a multiple of 4, the row 16-byte
// aligned for float, 8-byte for half and bfloat): the mat-vec tier's wide loads.
float4 gguf_mv_load4(device const float *p);
float4 gguf_mv_load4(device const half *p);
#if GGUF_BFLOAT
float4 gguf_mv_load4(device const bfloat *p);
#endif

// The mat-vec tier's sum over the lanes, a butterfly with a pinned order (not simd_sum, whose order Apple does
// not document): lane l's value plus lane l ^ 16's, then those sums at distance 8, 4, 2, 1; the same tree
// whatever else is summed. L values per lane (a power of 2) are
// summed at once by halving: at distance d a lane keeps the half of its list that bit d of its index selects,
// sends the other half to lane ^ d and adds what it receives (own + received: commutative, so both lanes of a
// pair get the same bits), until one value is left; the remaining distances are plain butterfly steps.
// Afterwards the lane holds max(L / 32, 1) sums: v[t] is the sum of value gguf_butterfly_index<L>(t, lane).
// With S > 0 the first S distances find the list already in the order the lane keeps (the lane with bit d set
// holds value t ^ (half the list) at t, as gguf_mv_slot_swap arranges): no selects there, the same sums.
template <uint L, uint S = 0>
GGUF_MV_INLINE void gguf_butterfly(thread float *v, ushort lane) {
    uint len = L;
    uint level = 0;
#pragma unroll
    for (ushort d = GGUF_SIMD_WIDTH / 2; d > 0; d /= 2, ++level) {
        if (len > 1) {
            const uint kept = len / 2;
            const bool upper = level >= S && (lane & d) != 0;
#pragma unroll
            for (uint i = 0; i < L / 2; ++i) {
                if (i < kept) {
                    const float send = upper ? v[i] : v[i + kept];
                    const float keep = upper ? v[i + kept] : v[i];
                    v[i] = keep + simd_shuffle_xor(send, d);
                }
            }
            len = kept;
        } else {
            v[0] = v[0] + simd_shuffle_xor(v[0], d);
        }
    }
}

template <uint L>
GGUF_MV_INLINE uint gguf_butterfly_index(uint t, ushort lane) {
    uint index = t;
    uint len = L;
    for (uint d = GGUF_SIMD_WIDTH / 2; d > 0 && len > 1; d /= 2) {
        len /= 2;
        index += (lane & d) ? len : 0u;
    }
    return index;
}

// Rows of x a mat-vec simdgroup sums at once for mr rows: 1, 2, 4 or 8 (the sums do not depend on how many).
GGUF_MV_INLINE uint gguf_mv_rows_summed(uint mr) {
    return mr == 1 ? 1 : mr == 2 ? 2 : mr <= 4 ? 4 : GGUF_MATMUL_X_ROWS;
}

// The lane's slot m accumulates row m ^ gguf_mv_slot_swap(mr, lane) of x. When mr rows are summed at once (a
// power of 2), slots are swapped so that the butterfly's first two distances (16 and 8), which split the row bits
// of the sum list (row-major: value m * R + r), need no selects: at distance 16 the upper lanes hold row
// m ^ MP / 2 in slot m, at distance 8 row m ^ MP / 4. The swaps follow lane bits 3 and 4, so each group of 8
// lanes, which reads whole lines of x, still reads one row per access (lane bit 2 too would split Q8_0's and the
// float types' lines). Otherwise (mr = 3, 5, 6, 7) slot m is row m.
GGUF_MV_INLINE uint gguf_mv_slot_swap(uint mr, ushort lane) {
    const uint mp = gguf_mv_rows_summed(mr);
    return mp != mr ? 0u : ((lane & 16) ? mp / 2 : 0u) | ((lane & 8) ? mp / 4 : 0u);
}

// Sum acc[r][m] (slots m < MP <= GGUF_MATMUL_X_ROWS, MP >= mr, arranged by gguf_mv_slot_swap) over the simdgroup
// and write out[orow[row], n0 + r] (+ bias) for the weight rows that exist: one lane per output stores.
template <uint R, uint MP, typename T>
GGUF_MV_INLINE void gguf_mv_store_rows(thread const float *acc, uint mr, thread const uint *orow, uint n0, uint N,
                                       device const float *bias, bool has_bias, device T *out, ushort lane) {
    constexpr uint L = R * MP;
    float v[L];
#pragma unroll
    for (uint m = 0; m < MP; ++m) {
#pragma unroll
        for (uint r = 0; r < R; ++r) {
            v[m * R + r] = acc[r * GGUF_MATMUL_X_ROWS + m];
        }
    }
    if (mr == MP) {
        gguf_butterfly<L, MP >= 4 ? 2 : MP == 2 ? 1 : 0>(v, lane);
    } else {
        gguf_butterfly<L>(v, lane);
    }
    constexpr uint HELD = L >= GGUF_SIMD_WIDTH ? L / GGUF_SIMD_WIDTH : 1;
    // With fewer values than lanes, GGUF_SIMD_WIDTH / L lanes hold each sum: the one whose other bits are 0 stores.
    const bool stores = L >= GGUF_SIMD_WIDTH || (lane & (GGUF_SIMD_WIDTH / L - 1)) == 0;
#pragma unroll
    for (uint t = 0; t < HELD; ++t) {
        const uint index = gguf_butterfly_index<L>(t, lane);
        const uint m = index / R;
        const uint r = index % R;
        if (stores && m < mr && n0 + r < N) {
            float y = v[t];
            if (has_bias) {
                y = y + bias[n0 + r];
            }
            out[ulong(orow[m]) * N + n0 + r] = gguf_round<T>(y);
        }
    }
}

// acc[r * GGUF_MATMUL_X_ROWS + m] for m < mr: the butterfly over as few of the m as cover mr (the sums do not
// depend on how many are summed at once).
template <uint R, typename T>
inline void gguf_mv_store(thread const float *acc, uint mr, thread const uint *orow, uint n0, uint N,
                          device const float *bias, bool has_bias, device T *out, ushort lane) {
    switch (gguf_mv_rows_summed(mr)) {
    case 1:
        gguf_mv_store_rows<R, 1>(acc, mr, orow, n0, N, bias, has_bias, out, lane);
        break;
    case 2:
        gguf_mv_store_rows<R, 2>(acc, mr, orow, n0, N, bias, has_bias, out, lane);
        break;
    case 4:
        gguf_mv_store_rows<R, 4>(acc, mr, orow, n0, N, bias, has_bias, out, lane);
        break;
    default:
        gguf_mv_store_rows<R, GGUF_MATMUL_X_ROWS>(acc, mr, orow, n0, N, bias, has_bias, out, lane);
    }
}

// The mat-vec tier's orders, as tag types that select gguf_mv_accumulate's overload: the factored order (every
// quantized type: launch.MV_FACTORED, whose file defines gguf_mv_quad and gguf_mv_codes) and, below, the float
// types' order (gguf_float_core).
template <typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET>
struct gguf_factored_core {};

// Four bytes at p as a little-endian word, for blocks only 2-byte aligned: two 16-bit loads.
GGUF_MV_INLINE uint gguf_mv_word(device const uchar *p) {
    device const ushort *w = reinterpret_cast<device const ushort *>(p);
    return uint(w[0]) | (uint(w[1]) << 16);
}

// Q5_0 and Q5_1: bits 4p .. 4p + 3 of qh, one per byte, moved to bit 4 of each: the fifth bits of elements
// 4p .. 4p + 3 (x * 0x00204081 places copies of the 4 bits at 0, 7, 14, 21 without overlap, so no carries).
GGUF_MV_INLINE uint gguf_mv_fifth_bits(uint qh, ushort part) {
    return ((((qh >> (4 * part)) & 0xFu) * 0x00204081u) & 0x01010101u) << 4;
}

// Q4_K and Q5_K: the 6-bit scales and mins of sub-blocks 2g and 2g + 1 (ggml's get_scale_min_k4) from the
// block's 12 scale bytes, as the bytes sc(2g), sc(2g + 1), m(2g), m(2g + 1) of one word. For g < 2 they are
// the low 6 bits of scale bytes 2g, 2g + 1 and 4 + 2g, 5 + 2g; for g >= 2 (G = g - 2) their low 4 bits are
// the nibbles of bytes 8 + 2G, 9 + 2G (low: sc, high: m) and their high 2 bits the top bits of bytes 2G,
// 2G + 1 (sc) and 4 + 2G, 5 + 2G (m). 16-bit loads: blocks are 2-byte aligned. Without a branch (g differs
// between the lanes of a simdgroup, which would run both ways): the bytes of `low` shifted right by 0 (g < 2)
// or 2 and masked to 6 or to the top 2 bits, or'd with the nibbles (masked away for g < 2).
GGUF_MV_INLINE uint gguf_mv_scale_min_k4(device const uchar *scales, uint g) {
    device const ushort *s = reinterpret_cast<device const ushort *>(scales);
    const uint low = uint(s[g % 2]) | (uint(s[2 + g % 2]) << 16);
    const uint nibbles = s[4 + g % 2];
    const bool first = g < 2;
    return ((low >> (first ? 0u : 2u)) & (first ? 0x3F3F3F3Fu : 0x30303030u)) |
           ((nibbles | (nibbles << 12)) & (first ? 0u : 0x0F0F0F0Fu));
}

// Scales decoded by the lanes of a block together, once per step (a type opts in with gguf_mv_lane_scales and
// defines gguf_mv_row_scales): each lane decodes a few of the R weight rows' run scales (and offsets) of its
// block and takes its own by simd_shuffle, instead of every lane of the block decoding the same fields. They
// replace the a and o that gguf_mv_codes gives (the same values; the compiler drops the unused decode), and the
// codes come from gguf_mv_lane_codes. gguf_mv_row_scales returns whether some lane of the simdgroup must pass its
// codes through gguf_mv_rescale_codes this step (the same for every lane: MXFP4's subnormal scales).
template <typename B>
struct gguf_mv_lane_scales {
    enum { value = 0 };
};

template <uint R, int RUNS, typename B>
GGUF_MV_INLINE bool gguf_mv_row_scales(device const B *const thread *, uint, ushort, ushort, thread float[][RUNS],
                                       thread float[][RUNS]) {
    return false;
}

// The codes (and a, o) of a block part in the mat-vec tier: gguf_mv_codes, unless a type with lane scales does
// per-block work in gguf_mv_codes that its gguf_mv_row_scales replaces besides decoding a and o (then the type
// overloads this; a and o are overwritten from the row scales).
template <typename B, typename T>
GGUF_MV_INLINE void gguf_mv_lane_codes(device const B *b, ushort part, T table, thread float4 *q, thread float *a,
                                       thread float *o) {
    gguf_mv_codes(b, part, table, q, a, o);
}

template <typename B>
GGUF_MV_INLINE void gguf_mv_rescale_codes(device const B *, ushort, thread float4 *) {}

// rows[first + quarter] (quarter < 4) without a run-time index (a thread array indexed at run time stays in memory).
template <typename B>
GGUF_MV_INLINE device const B *gguf_mv_row_of_quarter(device const B *const thread *rows, uint first, uint quarter) {
    return quarter == 0   ? rows[first]
           : quarter == 1 ? rows[first + 1]
           : quarter == 2 ? rows[first + 2]
                          : rows[first + 3];
}

// The lane scales' exchange, for blocks of PARTS lanes with PARTS / 4 run sets (pairs of runs for 16 lanes, the
// block's one run for 4): lane p of a block holds mine[k][v] for row p / (PARTS / 4) + 4k, run set p % (PARTS / 4)
// (v: the set's runs) and takes out[r][v], row r's value of its own run set g = p / 4, from lane
// (PARTS / 4) (r % 4) + g of its block.
template <uint R, int RUNS, uint PARTS>
GGUF_MV_INLINE void gguf_mv_share_row_scales(thread const float mine[][RUNS], ushort part, ushort lane,
                                             thread float out[][RUNS]) {
    static_assert(PARTS % 4 == 0, "four row quarters per block");
    const ushort first = lane - part;
    const uint g = part / 4;
#pragma unroll
    for (uint r = 0; r < R; ++r) {
        const ushort from = ushort(first + (PARTS / 4) * (r % 4) + g);
#pragma unroll
        for (int v = 0; v < RUNS; ++v) {
            out[r][v] = simd_shuffle(mine[r / 4][v], from);
        }
    }
}

// Q4_K and Q5_K in the mat-vec tier (gguf_mv_lane_scales): lane p of a block decodes the scales and
// offsets a = d sc, o = -(dmin m) of the pair of sub-blocks 2j, 2j + 1 (j = p % 4) of rows p / 4, p / 4 + 4, ...
// (R / 4 pairs instead of R), and takes those of its pair g in row r from lane 4 (r % 4) + g of its block.
// Both blocks start with d, dmin and the 12 scale bytes.
template <uint R, int RUNS, typename B>
GGUF_MV_INLINE bool gguf_mv_row_scales_k4(device const B *const thread *rows, uint ib, ushort part, ushort lane,
                                          thread float a[][RUNS], thread float o[][RUNS]) {
    static_assert(R % 4 == 0 && RUNS == 2, "four rows per group of 4 lanes, two runs per lane");
    const uint j = part % 4;
    const uint quarter = part / 4;
    float mine_a[R / 4][2];
    float mine_o[R / 4][2];
#pragma unroll
    for (uint k = 0; k < R / 4; ++k) {
        device const B *b = gguf_mv_row_of_quarter(rows, 4 * k, quarter) + ib;
        const float4 scm = float4(as_type<uchar4>(gguf_mv_scale_min_k4(b->scales, j)));  // sc(2j + v), m(2j + v)
        const float2 dm = float2(*reinterpret_cast<device const half2 *>(&b->d));
#pragma unroll
        for (uint v = 0; v < 2; ++v) {
            mine_a[k][v] = dm.x * scm[v];
            mine_o[k][v] = -(dm.y * scm[2 + v]);
        }
    }
    gguf_mv_share_row_scales<R, RUNS, 16>(mine_a, part, lane, a);
    gguf_mv_share_row_scales<R, RUNS, 16>(mine_o, part, lane, o);
    return false;
}

// A type without a value table looked up by shuffles (gguf_mv_table): no entry.
template <typename B>
GGUF_MV_INLINE float gguf_mv_table(device const B *, ushort) {
    return 0.0f;
}

// Tables staged in threadgroup memory (the IQ grids, read at lane-divergent indices: from threadgroup memory
// they cost no L1 lines). A type that stages defines, in its file, a specialisation of gguf_mv_stage_words
// (the uint words it stages), gguf_mv_stage (fills them: called by every thread of the group, once, before
// a barrier) and gguf_mv_staged_table (what gguf_mv_codes receives as its table, given the staged words).
// The defaults stage nothing and pass the type's shuffle table (gguf_mv_table above) on.
template <typename B>
struct gguf_mv_stage_words {
    enum { value = 0 };
};

template <typename B>
GGUF_MV_INLINE void gguf_mv_stage(device const B *, threadgroup uint *, ushort, ushort) {}

template <typename B>
GGUF_MV_INLINE float gguf_mv_staged_table(device const B *b, ushort lane, threadgroup const uint *) {
    return gguf_mv_table(b, lane);
}

// What a staging type's gguf_mv_staged_table gives gguf_mv_codes: the staged words and the lane (for shuffles).
struct gguf_mv_staged {
    threadgroup const uint *words;
    ushort lane;
};

// The IQ types' staging helpers. A grid of `bytes` bytes (a multiple of 16; gguf_tables.h aligns the grids
// to 16 bytes), copied as vectors.
template <typename E>
GGUF_MV_INLINE void gguf_stage_grid(constant const E *grid, uint bytes, threadgroup uint *stage, ushort tid,
                                    ushort threads) {
    constant const uint4 *from = reinterpret_cast<constant const uint4 *>(grid);
    threadgroup uint4 *to = reinterpret_cast<threadgroup uint4 *>(stage);
    for (uint i = tid; i < bytes / 16; i += threads) {
        to[i] = from[i];
    }
}

// Sign bytes as two words of byte masks each (byte j is 0xFF where bit j is set): the 128 of ksigns
// (ksigns_iq2xs), or with ksigns null every byte value (256).
GGUF_MV_INLINE void gguf_stage_sign_masks(constant const uchar *ksigns, threadgroup uint *stage, ushort tid,
                                          ushort threads) {
    const uint entries = ksigns ? 128 : 256;
    for (uint i = tid; i < entries * 2; i += threads) {
        const uint signs = ((ksigns ? uint(ksigns[i / 2]) : i / 2) >> (4 * (i % 2))) & 0xF;
        stage[i] = ((signs * 0x00204081u) & 0x01010101u) * 0xFFu;  // bit j (j < 4) -> byte j
    }
}

// Grid bytes (each in 1..127) negated where `negate` has 0xFF (two's complement per byte), as floats.
GGUF_MV_INLINE float4 gguf_signed_bytes(uint values, uint negate) {
    return float4(as_type<char4>((values ^ negate) + (negate & 0x01010101u)));
}

// IQ1_S / IQ1_M: four codes 8 (g + delta) = 8 g +- 1 (negative: delta = -1/8), as floats, of iq1s_grid values
// g (-1, 0, 1) staged as bytes 8 g + 128 (each in 120..136; gguf_tables.h's iq1s_staged, copied by
// gguf_stage_grid): one addition (no carry or borrow between bytes) and an exclusive or.
GGUF_MV_INLINE float4 gguf_iq1_codes(uint staged, bool negative) {
    return float4(as_type<char4>((staged + (negative ? 0xFEFEFEFFu : 0x01010101u)) ^ 0x80808080u));
}

// v rotated left by r bits (bits leaving at the top come back at the bottom; r taken modulo 32): a lane-constant
// shift in either direction, as one funnel-shift instruction.
GGUF_MV_INLINE uint gguf_rotl(uint v, uint r) {
    return (v << (r & 31)) | (v >> ((32 - r) & 31));
}

// Row `row` of a staged grid of 8-byte rows (or a sign-mask pair) as one 8-byte threadgroup load.
GGUF_MV_INLINE uint2 gguf_staged_pair(threadgroup const uint *words, uint row) {
    return reinterpret_cast<threadgroup const uint2 *>(words)[row];
}

// The words a mat-vec core stages (only the factored order stages) and the block type it stages for.
template <typename CORE>
struct gguf_core_stage {
    enum { words = 0 };
    typedef uchar block;
};
template <typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET>
struct gguf_core_stage<gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>> {
    enum { words = gguf_mv_stage_words<B>::value };
    typedef B block;
};

// Threadgroup memory for a core's staged tables (one vector when it stages none: never touched), filled by
// every thread of the group before any returns
// (16-byte aligned: gguf_mv_codes may read it as vectors).
#define GGUF_MV_STAGE(CORE, stage, tid)                                                          \
    threadgroup uint4 stage##_vectors[(gguf_core_stage<CORE>::words + 3) / 4 > 0 ?              \
                                      (gguf_core_stage<CORE>::words + 3) / 4 : 1];              \
    threadgroup uint *stage = reinterpret_cast<threadgroup uint *>(stage##_vectors);            \
    if (gguf_core_stage<CORE>::words > 0) {                                                      \
        gguf_mv_stage(reinterpret_cast<device const typename gguf_core_stage<CORE>::block *>(w), \
                      stage, tid, GGUF_MV_THREADS);                                              \
        threadgroup_barrier(mem_flags::mem_threadgroup);                                         \
    }

// The factored order (launch.MV_FACTORED, launch.matvec_error_constant): lane l takes part p = l % PARTS
// of blocks l / PARTS, l / PARTS + 32 / PARTS, ...; in each, QUADS quads of 4 contiguous elements
// (gguf_mv_quad: where they sit) in RUNS runs of QUADS / RUNS quads sharing a scale a and an offset o
// (gguf_mv_codes: the codes q and each run's a, o; w = a q + o). Per block and run, in order: without an
// offset, dq = fma chain of q x from +0 (quads, then elements, in order), then acc = fma(a, dq, acc); with
// an offset (OFFSET), each weight is decoded once, w = fma(a, q, o) (the decoded value itself: a q is exact,
// so this is dequantize's one rounding), and acc = fma(w, x, acc) per element in the same order (no sum of
// x, no per-run scale and offset fmas per row of x). x is loaded as 4-vectors once per block and activation
// row and applied to all R weight rows; each weight row's codes are read once per block and applied to all
// mr activation rows (one row: each weight row's codes are used as soon as they are read, so few are live
// at once; the same operations per output). Rows past N read row N - 1 (never stored).

// One activation row's x values of a block part, xq pointing at the part's first quad (every type's quads
// sit at a lane's offset plus one that depends on the quad only, so the loads take constant offsets).
template <typename B, int QUADS, typename X>
GGUF_MV_INLINE void gguf_mv_x(device const B *row, device const X *xq, ushort part, thread float4 *xs) {
#pragma unroll
    for (uint j = 0; j < QUADS; ++j) {
        const uint offset = gguf_mv_quad(row, part, j) - gguf_mv_quad(row, part, 0);
        xs[j] = float4(*reinterpret_cast<device const vec<X, 4> *>(xq + offset));
    }
}

// With an offset, the codes of a block part become its decoded weights (once per weight row and block).
template <int QUADS, int RUNS, int OFFSET>
GGUF_MV_INLINE void gguf_mv_decode(thread float4 *q, thread const float *a, thread const float *o) {
    constexpr uint QPR = QUADS / RUNS;
    if (OFFSET) {
#pragma unroll
        for (uint j = 0; j < QUADS; ++j) {
            q[j] = fma(float4(a[j / QPR]), q[j], float4(o[j / QPR]));
        }
    }
}

// One output's operations for one block part, in the order above (q: decoded weights with an offset).
template <int QUADS, int RUNS, int OFFSET>
GGUF_MV_INLINE float gguf_mv_dot(thread const float4 *q, thread const float *a, thread const float4 *xs, float s) {
    constexpr uint QPR = QUADS / RUNS;
    if (OFFSET) {
#pragma unroll
        for (uint j = 0; j < QUADS; ++j) {
            s = fma(q[j].x, xs[j].x, s);
            s = fma(q[j].y, xs[j].y, s);
            s = fma(q[j].z, xs[j].z, s);
            s = fma(q[j].w, xs[j].w, s);
        }
        return s;
    }
#pragma unroll
    for (uint u = 0; u < RUNS; ++u) {
        float dq = 0.0f;
#pragma unroll
        for (uint j = u * QPR; j < u * QPR + QPR; ++j) {
            dq = fma(q[j].x, xs[j].x, dq);
            dq = fma(q[j].y, xs[j].y, dq);
            dq = fma(q[j].z, xs[j].z, dq);
            dq = fma(q[j].w, xs[j].w, dq);
        }
        s = fma(a[u], dq, s);
    }
    return s;
}

// One step's decoded block parts of R weight rows applied to the first mr rows of x (MR: mr when known at compile
// time), each row's x pointer advanced by ADVANCE elements.
template <uint R, int QUADS, int RUNS, int OFFSET, uint ADVANCE, uint MR = 0, typename B, typename X>
GGUF_MV_INLINE void gguf_mv_rows_of_x(device const B *row, device const X *thread *xm, ushort part,
                                      thread const float4 q[][QUADS], thread const float a[][RUNS],
                                      thread float *acc, uint mr = MR) {
#pragma unroll
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        if (m < (MR ? MR : mr)) {
            float4 xs[QUADS];
            gguf_mv_x<B, QUADS>(row, xm[m], part, xs);
            xm[m] += ADVANCE;
#pragma unroll
            for (uint r = 0; r < R; ++r) {
                acc[r * GGUF_MATMUL_X_ROWS + m] =
                    gguf_mv_dot<QUADS, RUNS, OFFSET>(q[r], a[r], xs, acc[r * GGUF_MATMUL_X_ROWS + m]);
            }
        }
    }
}

template <uint R, typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET, typename X>
GGUF_MV_INLINE void gguf_mv_accumulate(gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>, device const uchar *w,
                                       uint n0, uint N, uint K, device const X *x, thread const uint *xrow,
                                       uint mr, ushort lane, thread float *acc, threadgroup const uint *stage) {
    constexpr uint STEP = GGUF_SIMD_WIDTH / PARTS;  // blocks per simdgroup and step
    const uint nb = K / QK;
    const ulong bpr = ulong(nb) * sizeof(B);
    const ushort part = lane % PARTS;
    device const B *rows[R];
#pragma unroll
    for (uint r = 0; r < R; ++r) {
        rows[r] = reinterpret_cast<device const B *>(w + ulong(min(n0 + r, N - 1)) * bpr);
    }
    // The lane's entry of the type's value table (lane % 16), for gguf_mv_codes to look codes up by
    // simd_shuffle: every lane runs every step (a lane past the last block reads that block and does not
    // accumulate), so the shuffles are uniform.
    const auto table = gguf_mv_staged_table(rows[0], lane, stage);
    // Each activation row's x at the lane's first quad of its first block, advanced by a step's blocks per
    // step (read only while the lane's block exists).
    device const X *xm[GGUF_MATMUL_X_ROWS];
#pragma unroll
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        xm[m] = x + ulong(xrow[m]) * K + (lane / PARTS) * QK + gguf_mv_quad(rows[0], part, 0);
    }
    const uint steps = (nb + STEP - 1) / STEP;
    for (uint step = 0; step < steps; ++step) {
        const uint first = step * STEP + lane / PARTS;
        const bool live = first < nb;
        const uint ib = live ? first : nb - 1;
        float4 xs[QUADS];
        if (mr == 1) {
            if (live) {
                gguf_mv_x<B, QUADS>(rows[0], xm[0], part, xs);
            }
            xm[0] += STEP * QK;
            float scales[R][RUNS];
            float offsets[R][RUNS];
            bool rescale = false;
            if (gguf_mv_lane_scales<B>::value) {
                rescale = gguf_mv_row_scales<R, RUNS>(rows, ib, part, lane, scales, offsets);
            }
#pragma unroll
            for (uint r = 0; r < R; ++r) {
                float4 q[QUADS];
                float a[RUNS];
                float o[RUNS];
                gguf_mv_lane_codes(rows[r] + ib, part, table, q, a, o);
                if (gguf_mv_lane_scales<B>::value) {
                    if (rescale) {
                        gguf_mv_rescale_codes(rows[r] + ib, part, q);
                    }
#pragma unroll
                    for (uint u = 0; u < RUNS; ++u) {
                        a[u] = scales[r][u];
                        o[u] = offsets[r][u];
                    }
                }
                gguf_mv_decode<QUADS, RUNS, OFFSET>(q, a, o);
                if (live) {
                    acc[r * GGUF_MATMUL_X_ROWS] = gguf_mv_dot<QUADS, RUNS, OFFSET>(q, a, xs, acc[r * GGUF_MATMUL_X_ROWS]);
                }
            }
            continue;
        }
        float4 q[R][QUADS];
        float a[R][RUNS];
        float o[R][RUNS];
#pragma unroll
        for (uint r = 0; r < R; ++r) {
            gguf_mv_lane_codes(rows[r] + ib, part, table, q[r], a[r], o[r]);
        }
        if (gguf_mv_lane_scales<B>::value && gguf_mv_row_scales<R, RUNS>(rows, ib, part, lane, a, o)) {
#pragma unroll
            for (uint r = 0; r < R; ++r) {
                gguf_mv_rescale_codes(rows[r] + ib, part, q[r]);
            }
        }
#pragma unroll
        for (uint r = 0; r < R; ++r) {
            gguf_mv_decode<QUADS, RUNS, OFFSET>(q[r], a[r], o[r]);
        }
        if (!live) {
            continue;
        }
        // A full tile of rows of x (the common case) runs without a test per row.
        if (mr == GGUF_MATMUL_X_ROWS) {
            gguf_mv_rows_of_x<R, QUADS, RUNS, OFFSET, QK * STEP, GGUF_MATMUL_X_ROWS>(rows[0], xm, part, q, a, acc);
        } else {
            gguf_mv_rows_of_x<R, QUADS, RUNS, OFFSET, QK * STEP>(rows[0], xm, part, q, a, acc, mr);
        }
    }
}

// The float types' mat-vec order: the decode-exact order with sub-blocks of 4 elements (launch.MV_FLOAT_SUB):
// lane l sums quads l, l + 32, ... (elements 4s .. min(4s + 4, K)) by fma from +0. When K is a multiple of 4
// every quad is read as one vector of weights and one of x (the host aligns the rows), else element by
// element; the same arithmetic either way.
template <typename IN>
struct gguf_float_core {};

template <uint R, typename IN, typename X>
GGUF_MV_INLINE void gguf_mv_accumulate(gguf_float_core<IN>, device const uchar *w, uint n0, uint N, uint K,
                                       device const X *x, thread const uint *xrow, uint mr, ushort lane,
                                       thread float *acc, threadgroup const uint *) {
    device const IN *rows[R];
#pragma unroll
    for (uint r = 0; r < R; ++r) {
        rows[r] = reinterpret_cast<device const IN *>(w) + ulong(min(n0 + r, N - 1)) * K;
    }
    const uint nq = (K + 3) / 4;
    const bool wide = K % 4 == 0;
    for (uint s = lane; s < nq; s += GGUF_SIMD_WIDTH) {
        const uint first = 4 * s;
        const uint count = min(4u, K - first);
        float4 wv[R];
#pragma unroll
        for (uint r = 0; r < R; ++r) {
            if (wide) {
                wv[r] = gguf_mv_load4(rows[r] + first);
            } else {
                float v[4] = {};
                gguf_mm_decode(rows[r] + first, 0, count, v);  // elements first .. first + count - 1
                wv[r] = float4(v[0], v[1], v[2], v[3]);
            }
        }
#pragma unroll
        for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
            if (m < mr) {
                device const X *xq = x + ulong(xrow[m]) * K + first;
                float4 xv = float4(0.0f);
                if (wide) {
                    xv = float4(*reinterpret_cast<device const vec<X, 4> *>(xq));
                } else {
                    for (uint i = 0; i < count; ++i) {
                        xv[i] = float(xq[i]);
                    }
                }
#pragma unroll
                for (uint r = 0; r < R; ++r) {
                    float a = acc[r * GGUF_MATMUL_X_ROWS + m];
                    a = fma(wv[r].x, xv.x, a);
                    if (count > 1) {
                        a = fma(wv[r].y, xv.y, a);
                    }
                    if (count > 2) {
                        a = fma(wv[r].z, xv.z, a);
                    }
                    if (count > 3) {
                        a = fma(wv[r].w, xv.w, a);
                    }
                    acc[r * GGUF_MATMUL_X_ROWS + m] = a;
                }
            }
        }
    }
}

#define GGUF_MM_PARAMS(X, T)                                                                    \
    device const uchar *w [[buffer(0)]], device const X *x [[buffer(1)]],                       \
        device const float *bias [[buffer(2)]], device T *out [[buffer(3)]],                    \
        constant ulong &K [[buffer(4)]], constant ulong &N [[buffer(5)]],                       \
        constant ulong &M [[buffer(6)]], constant ulong &has_bias [[buffer(7)]],                \
        uint2 tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],  \
        ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]

#define GGUF_ID_BUFFERS(X)                                                                      \
    device const uchar *w [[buffer(0)]], device const X *x [[buffer(1)]],                       \
        device const int *ids [[buffer(2)]], device float *out [[buffer(3)]],                   \
        constant ulong &K [[buffer(4)]], constant ulong &N [[buffer(5)]],                       \
        constant ulong &E [[buffer(6)]], constant ulong &U [[buffer(7)]],                       \
        constant ulong &Ux [[buffer(8)]]

#define GGUF_MV_ID_PARAMS(X)                                                                    \
    GGUF_ID_BUFFERS(X), uint2 tg [[threadgroup_position_in_grid]],                              \
        ushort sg [[simdgroup_index_in_threadgroup]], ushort lane [[thread_index_in_simdgroup]]

#define GGUF_MM_ID_PARAMS(X)                                                                    \
    device const uchar *w [[buffer(0)]], device const X *x [[buffer(1)]],                       \
        device float *out [[buffer(3)]], device const uint *map [[buffer(4)]],                  \
        constant ulong &K [[buffer(5)]], constant ulong &N [[buffer(6)]],                       \
        constant ulong &E [[buffer(7)]], constant ulong &U [[buffer(8)]],                       \
        constant ulong &Ux [[buffer(9)]], constant ulong &n_slots [[buffer(10)]],               \
        uint3 tg [[threadgroup_position_in_grid]], uint3 groups [[threadgroups_per_grid]],      \
        ushort tid [[thread_index_in_threadgroup]], ushort sg [[simdgroup_index_in_threadgroup]]

// Mat-vec: up to 8 activation rows per threadgroup, weights decoded into registers; CORE is the order. R
// weight rows per simdgroup: GGUF_MV_ROWS below gguf_mv_wide_m rows of x, else GGUF_MV_WIDE_ROWS
// (launch.mv_rows; the host launches ceil(N / (GGUF_MV_SIMDGROUPS * R)) groups). R only groups the outputs:
// each one's order is the same.
template <uint R, typename CORE, typename X, typename T>
GGUF_MV_INLINE void gguf_mul_mv_rows(device const uchar *w, device const X *x, device const float *bias,
                                     device T *out, uint K, uint N, uint M, bool has_bias, uint2 tg, ushort sg,
                                     ushort lane, threadgroup const uint *stage) {
    const uint n0 = (tg.x * GGUF_MV_SIMDGROUPS + sg) * R;
    const uint m0 = tg.y * GGUF_MATMUL_X_ROWS;
    if (n0 >= N || m0 >= M) {
        return;  // the whole simdgroup: nothing to compute
    }
    const uint mr = min(M - m0, GGUF_MATMUL_X_ROWS);
    const uint swap = gguf_mv_slot_swap(mr, lane);
    uint rows[GGUF_MATMUL_X_ROWS];
    uint xrow[GGUF_MATMUL_X_ROWS];
#pragma unroll
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        rows[m] = m;
        xrow[m] = m ^ swap;
    }
    float acc[R * GGUF_MATMUL_X_ROWS] = {};
    gguf_mv_accumulate<R>(CORE(), w, n0, N, K, x + ulong(m0) * K, xrow, mr, lane, acc, stage);
    gguf_mv_store<R>(acc, mr, rows, n0, N, bias, has_bias, out + ulong(m0) * N, lane);
}

// The rows of x from which a core's mul_mv takes GGUF_MV_WIDE_ROWS weight rows (launch.mv_wide_m): its type's
// GGUF_MV_WIDE_M_<type> (GGUF_MATMUL_FACTORED_KERNELS specialises this), else GGUF_MV_WIDE_M.
template <typename CORE>
struct gguf_mv_wide_m {
    enum { value = GGUF_MV_WIDE_M };
};

template <typename CORE, typename X, typename T>
[[max_total_threads_per_threadgroup(GGUF_MV_THREADS)]] kernel void kernel_mul_mv(GGUF_MM_PARAMS(X, T)) {
    GGUF_MV_STAGE(CORE, stage, tid)
    if (M >= gguf_mv_wide_m<CORE>::value) {
        gguf_mul_mv_rows<GGUF_MV_WIDE_ROWS, CORE>(w, x, bias, out, uint(K), uint(N), uint(M), has_bias != 0, tg, sg,
                                                  lane, stage);
    } else {
        gguf_mul_mv_rows<GGUF_MV_ROWS, CORE>(w, x, bias, out, uint(K), uint(N), uint(M), has_bias != 0, tg, sg, lane,
                                             stage);
    }
}

// Whether the matrix tier reads a factored type's tile through its factored access (gguf_mm_weights below):
// launch.MM_FACTORED, the layouts of launch.MM_PART_GROUP's form (see gguf_mm_weights) whose codes need no
// staged table (GGUF_MATMUL_FACTORED_KERNELS specialises it); else the decode function.
template <typename B>
struct gguf_mm_factored {
    enum { value = 0, part_group = 1 };
};
struct gguf_decoded_tile {};  // the tile reader that calls the decode function
template <bool C, typename T, typename F>
struct gguf_select {
    typedef T type;
};
template <typename T, typename F>
struct gguf_select<false, T, F> {
    typedef F type;
};
template <typename CORE>
struct gguf_mm_reader {
    typedef gguf_decoded_tile type;
};
template <typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET>
struct gguf_mm_reader<gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>> {
    typedef typename gguf_select<gguf_mm_factored<B>::value, gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>,
                                 gguf_decoded_tile>::type type;
};
template <>
struct gguf_mm_reader<gguf_float_core<half>> {
    typedef gguf_float_core<half> type;  // the half tile below
};

// The element type of the matrix tier's weight tile: float32 (the decoded values, [k][n]), except for F16
// weights, which stay half ([n][k]: each row's 8 halves copied as one vector, no conversion) and enter the
// multiply-accumulate as simdgroup_half8x8 with float x and float accumulators: the same exact operands.
template <typename CORE>
struct gguf_mm_tile_type {
    typedef float type;
};
template <>
struct gguf_mm_tile_type<gguf_float_core<half>> {
    typedef half type;
};

// The matrix tier's weight tile: rows n0 .. n0 + GGUF_MM_ROWS - 1, elements k0 .. k0 + GGUF_MM_K - 1 of K,
// written to wt[kk * GGUF_MM_ROWS + r] as float32 (the decoded values, exactly; +0 past K). Rows past N
// may hold anything: column r of the tile only reaches output column n0 + r, which is not stored. Two ways,
// by the mat-vec tier's order type: the decode function per sub-block (every type), or, for the factored
// types, the type's factored access read as coalesced words (consecutive lanes take consecutive parts of a
// block), w = a q (+ o): the same product and, with an offset, the same one rounding as the decode function.
// STEP: which GGUF_MM_K elements of a block a step takes when a block is longer (a compile-time index, so
// the quads of the other steps are never read).
template <uint STEP, typename B, int QK, int S, typename CORE>
inline void gguf_mm_weights(CORE, device const uchar *w, uint n0, uint N, uint k, uint k0, threadgroup float *wt,
                            ushort tid) {
    constexpr uint NT = GGUF_MM_ROWS;
    constexpr uint SUBS = GGUF_MM_K / S;  // sub-blocks of a row per step
    static_assert(GGUF_MM_K % S == 0 && STEP == 0, "a step holds whole sub-blocks");
    const ulong bpr = ulong(k / QK) * sizeof(B);
    for (uint q = tid; q < NT * SUBS; q += GGUF_MM_THREADS) {
        const uint r = q / SUBS;
        const uint j = q % SUBS;
        const uint s = k0 / S + j;
        float v[S];
#pragma unroll
        for (uint e = 0; e < S; ++e) {
            v[e] = 0.0f;
        }
        if (n0 + r < N && s * S < k) {
            gguf_mm_decode(reinterpret_cast<device const B *>(w + ulong(n0 + r) * bpr), s, k, v);
        }
#pragma unroll
        for (uint e = 0; e < S; ++e) {
            wt[(j * S + e) * NT + r] = v[e];
        }
    }
}

// F16 weights: the tile as half, row-major ([n][k], GGUF_MM_K halves per row): a thread copies 8 halves of a
// row (bits, no conversion) as one vector when K is a multiple of 4 (rows 8-byte aligned) and they lie inside K,
// else element by element with +0 past K. Rows past N are +0.
template <uint STEP, typename B, int QK, int S>
inline void gguf_mm_weights(gguf_float_core<half>, device const uchar *w, uint n0, uint N, uint k, uint k0,
                            threadgroup half *wt, ushort tid) {
    constexpr uint SUBS = GGUF_MM_K / 8;  // runs of 8 halves per row and step
    constexpr uint RSTEP = GGUF_MM_THREADS / SUBS;
    static_assert(STEP == 0 && GGUF_MM_K % 8 == 0 && GGUF_MM_ROWS % RSTEP == 0, "a step holds whole runs of 8");
    const uint kk = 8 * (tid % SUBS);  // a thread keeps its run and takes rows r0 + t RSTEP
    const uint r0 = tid / SUBS;
    threadgroup ushort *to = reinterpret_cast<threadgroup ushort *>(wt) + r0 * GGUF_MM_K + kk;
    device const ushort *row = reinterpret_cast<device const ushort *>(w) + k0 + kk;
    if (n0 + GGUF_MM_ROWS <= N && k % 4 == 0 && k0 + kk + 8 <= k) {  // every row's run inside: vector copies
        device const ushort *from = row + ulong(n0 + r0) * k;
        const ulong stride = ulong(RSTEP) * k;
#pragma unroll
        for (uint t = 0; t < GGUF_MM_ROWS / RSTEP; ++t) {
            const uint2 lo = *reinterpret_cast<device const uint2 *>(from + t * stride);
            const uint2 hi = *reinterpret_cast<device const uint2 *>(from + t * stride + 4);
            *reinterpret_cast<threadgroup uint4 *>(to + t * RSTEP * GGUF_MM_K) = uint4(lo, hi);
        }
        return;
    }
    for (uint t = 0; t < GGUF_MM_ROWS / RSTEP; ++t) {
        const uint r = r0 + t * RSTEP;
        for (uint e = 0; e < 8; ++e) {
            to[t * RSTEP * GGUF_MM_K + e] = n0 + r < N && k0 + kk + e < k ? row[ulong(n0 + r) * k + e] : ushort(0);
        }
    }
}

// The tile's weight rows from n on (float tiles are [k][n], half tiles [n][k]), and from there rows
// n + j .. + 7, elements k8 .. k8 + 7 as the multiply-accumulate's right operand (element (k, n); half tiles
// loaded transposed), at constant offsets.
GGUF_MV_INLINE threadgroup const float *gguf_mm_weight_rows(threadgroup const float *wt, uint n) {
    return wt + n;
}
GGUF_MV_INLINE threadgroup const half *gguf_mm_weight_rows(threadgroup const half *wt, uint n) {
    return wt + n * GGUF_MM_K;
}
GGUF_MV_INLINE void gguf_mm_load_weights(thread simdgroup_float8x8 &b, threadgroup const float *rows, uint k8, uint j) {
    simdgroup_load(b, rows + k8 * GGUF_MM_ROWS + j, GGUF_MM_ROWS);
}
GGUF_MV_INLINE void gguf_mm_load_weights(thread simdgroup_half8x8 &b, threadgroup const half *rows, uint k8, uint j) {
    simdgroup_load(b, rows + j * GGUF_MM_K + k8, GGUF_MM_K, ulong2(0), true);
}

// Steps of GGUF_MM_K per unrolled group of gguf_mm_tile's K loop: a factored block longer than a step is
// taken in QK / GGUF_MM_K steps, each reading only its own quads.
template <typename CORE>
constexpr uint gguf_mm_steps(CORE) {
    return 1;
}
template <typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET>
constexpr uint gguf_mm_steps(gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>) {
    return gguf_mm_factored<B>::value && QK > GGUF_MM_K ? QK / GGUF_MM_K : 1;
}

// The factored tile. The types' layouts (launch.MM_PART_GROUP) put quad j of part p at element
// 4 (GQ (p / PG) + PG j + p % PG) of its block (gguf_mv_quad; GQ = PG QUADS: groups of PG parts), so the
// CPS = GGUF_MM_K / 4 quads of a step (a group holds a multiple of that many) are QPS consecutive quads of PG
// consecutive parts, or one quad of PPS consecutive parts. A thread keeps its part and takes
// rows r0, r0 + RSTEP, ...; every lane runs the same iterations (gguf_mv_codes may shuffle).
template <uint STEP, typename B, int QK, int S, int PARTS, int QUADS, int RUNS, int OFFSET>
inline void gguf_mm_weights(gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>, device const uchar *w,
                            uint n0, uint N, uint k, uint k0, threadgroup float *wt, ushort tid) {
    constexpr uint NT = GGUF_MM_ROWS;
    constexpr uint CPS = GGUF_MM_K / 4;
    constexpr uint PG = gguf_mm_factored<B>::part_group;
    constexpr uint GQ = PG * QUADS;                  // quads per group of PG parts
    constexpr uint PPS = PG < CPS ? PG : CPS;        // parts per step
    constexpr uint QPS = CPS / PPS;                  // quads per part and step
    constexpr uint C0 = STEP * CPS % GQ;             // the step's first quad within its group
    constexpr uint J0 = C0 / PG;                     // the step's first quad and part within its block
    constexpr uint P0 = STEP * CPS / GQ * PG + C0 % PG;
    constexpr uint QPR = QUADS / RUNS;
    constexpr uint RSTEP = GGUF_MM_THREADS / PPS;
    static_assert(QK >= GGUF_MM_K && PPS * QPS == CPS && GQ % CPS == 0 && GGUF_MM_THREADS % PPS == 0 &&
                      NT % RSTEP == 0,
                  "a step is whole quads of one block, shared evenly by the threads");
    const uint nb = k / QK;
    const ushort part = P0 + tid % PPS;
    const uint r0 = tid / PPS;
    device const B *block = reinterpret_cast<device const B *>(w + ulong(n0) * nb * sizeof(B)) + k0 / QK;
    const float table = gguf_mv_table(block, ushort(tid % GGUF_SIMD_WIDTH));
    const uint last = N - 1 - n0;  // the tile's last row inside the matrix
#pragma unroll
    for (uint t = 0; t < NT / RSTEP; ++t) {
        const uint r = r0 + t * RSTEP;
        float4 q[QUADS];
        float a[RUNS];
        float o[RUNS];
        gguf_mv_codes(block + min(r, last) * nb, part, table, q, a, o);
#pragma unroll
        for (uint jq = 0; jq < QPS; ++jq) {
            const uint j = J0 + jq;
            const float4 v = OFFSET ? a[j / QPR] * q[j] + o[j / QPR] : a[j / QPR] * q[j];
            threadgroup float *dst = wt + (gguf_mv_quad(block, part, j) - STEP * GGUF_MM_K) * NT + r;
            dst[0] = v.x;
            dst[NT] = v.y;
            dst[2 * NT] = v.z;
            dst[3 * NT] = v.w;
        }
    }
}

// The matrix tier: a tile of GGUF_MM_ROWS (64) weight rows x MT (GGUF_MM_X_ROWS, 64) activation rows with
// simdgroup 8x8 float matrices. Per step of GGUF_MM_K (32) elements
// of K the threadgroup decodes the weight tile into threadgroup memory as float32 (exact: the decoded
// values; gguf_mm_weights), transposed ([k][n]), and stages the x tile as float32 ([m][k], exact widening);
// elements past K are +0 on both sides; x rows past mr hold anything finite or not (tile row m reaches only
// output row m, which is not stored). Simdgroup g owns the MT / 2 x rows (MT / 2) (g / 2) .. and the 32
// weight rows 32 (g % 2) ..: MT / 16 x 4 accumulators held in registers across the whole K loop, each step of
// 8 elements one simdgroup_multiply_accumulate per accumulator, in increasing k. The results go through
// threadgroup memory (reusing the tiles) to coalesced stores: out[orow[m], n0 + n] = round(acc + bias), for
// the rows m < mr. x row m of the tile is x[xrow[m]]. Every thread of the group calls it (barriers).
#define GGUF_MM_XQ (GGUF_MM_K / 4)  // 4-vectors per x row of a step
#define GGUF_MM_TILE_FLOATS(MT) \
    (GGUF_MM_K * (GGUF_MM_ROWS + (MT)) > (MT) * GGUF_MM_ROWS ? GGUF_MM_K * (GGUF_MM_ROWS + (MT)) : (MT) * GGUF_MM_ROWS)

// The multiply-accumulates of one step: per 8 elements of k, acc[4 i + j] += x rows sm + 8 i .. times weight
// rows sn + 8 j ..; PARTIAL: only the 8-row blocks that hold a row below mr (uniform over the simdgroup).
template <uint MT, bool PARTIAL, typename W>
inline void gguf_mm_mma(threadgroup const W *wt, threadgroup const float *xt, uint sm, uint sn, uint mr,
                        thread simdgroup_float8x8 *acc) {
    threadgroup const W *rows = gguf_mm_weight_rows(wt, sn);
    threadgroup const float *xs = xt + sm * GGUF_MM_K;  // the simdgroup's x rows (constant offsets below)
#pragma unroll
    for (uint k8 = 0; k8 < GGUF_MM_K; k8 += 8) {
        simdgroup_matrix<W, 8, 8> b[4];
#pragma unroll
        for (uint j = 0; j < 4; ++j) {
            gguf_mm_load_weights(b[j], rows, k8, 8 * j);
        }
#pragma unroll
        for (uint i = 0; i < MT / 16; ++i) {
            if (!PARTIAL || sm + 8 * i < mr) {
                simdgroup_float8x8 a;
                simdgroup_load(a, xs + 8 * i * GGUF_MM_K + k8, GGUF_MM_K);
#pragma unroll
                for (uint j = 0; j < 4; ++j) {
                    simdgroup_multiply_accumulate(acc[4 * i + j], a, b[j], acc[4 * i + j]);
                }
            }
        }
    }
}

// One step of GGUF_MM_K elements from k0: the weight and x tiles, then GGUF_MM_K / 8 multiply-accumulates of
// 8 x 8 x 8 per accumulator (acc[4 i + j]: x rows sm + 8 i .., weight rows sn + 8 j ..), in increasing k.
// xoff: when k is a multiple of 4, where this thread's 4-vectors of x sit (gguf_mm_tile).
template <uint STEP, uint MT, typename B, int QK, int S, typename CORE, typename X, typename W>
GGUF_MV_INLINE void gguf_mm_step(device const uchar *w, uint n0, uint N, uint k, uint k0, device const X *x,
                         threadgroup const uint *xrow, thread const ulong *xoff, uint mr, threadgroup W *wt,
                         threadgroup float *xt, ushort tid, uint sm, uint sn, thread simdgroup_float8x8 *acc) {
    constexpr uint KT = GGUF_MM_K;
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the previous step's (or the caller's) reads are done
    gguf_mm_weights<STEP, B, QK, S>(typename gguf_mm_reader<CORE>::type(), w, n0, N, k, k0, wt, tid);
    if (k % 4 == 0) {
        const uint kk = 4 * (tid % GGUF_MM_XQ);
        const bool inside = k0 + kk < k;
#pragma unroll
        for (uint t = 0; t < MT * GGUF_MM_XQ / GGUF_MM_THREADS; ++t) {
            const uint m = tid / GGUF_MM_XQ + t * (GGUF_MM_THREADS / GGUF_MM_XQ);
            float4 v = float4(0.0f);
            if (inside) {
                v = float4(*reinterpret_cast<device const vec<X, 4> *>(x + xoff[t] + k0));
            }
            *reinterpret_cast<threadgroup float4 *>(xt + m * KT + kk) = v;
        }
    } else {
        for (uint q = tid; q < MT * KT; q += GGUF_MM_THREADS) {
            const uint m = q / KT;
            const uint kk = q % KT;
            xt[q] = m < mr && k0 + kk < k ? float(x[ulong(xrow[m]) * k + k0 + kk]) : 0.0f;
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (sm + MT / 2 <= mr) {
        gguf_mm_mma<MT, false>(wt, xt, sm, sn, mr, acc);
    } else if (sm < mr) {  // a partly filled tile: 8-row blocks past mr reach no stored output
        gguf_mm_mma<MT, true>(wt, xt, sm, sn, mr, acc);
    }
}

// tile: GGUF_MM_TILE_FLOATS(MT) floats (the weight tile, then the x tile; at the end the output tile).
template <uint MT, typename B, int QK, int S, typename CORE, typename X, typename T>
inline void gguf_mm_tile(device const uchar *w, uint n0, uint N, uint k, device const X *x,
                         threadgroup const uint *xrow, threadgroup const uint *orow, uint mr,
                         device const float *bias, bool has_bias, device T *out, threadgroup float *tile,
                         ushort tid, ushort sg) {
    constexpr uint NT = GGUF_MM_ROWS;
    constexpr uint KT = GGUF_MM_K;
    constexpr uint AI = MT / 16;
    constexpr uint STEPS = gguf_mm_steps(CORE());
    static_assert(MT % 16 == 0 && GGUF_MM_SIMDGROUPS == 4 && NT == 64, "2 x 2 simdgroups of MT / 2 x 32");
    static_assert(STEPS == 1 || STEPS == 2 || STEPS == 4 || STEPS == 8, "a block is 1, 2, 4 or 8 steps");
    threadgroup auto *wt = reinterpret_cast<threadgroup typename gguf_mm_tile_type<CORE>::type *>(tile);
    threadgroup float *xt = tile + KT * NT;
    const uint sm = (sg / 2) * (MT / 2);  // this simdgroup's x rows and weight rows within the tile
    const uint sn = (sg % 2) * 32;
    simdgroup_float8x8 acc[4 * AI];
#pragma unroll
    for (uint i = 0; i < 4 * AI; ++i) {
        acc[i] = make_filled_simdgroup_matrix<float, 8>(0.0f);
    }
    // With k a multiple of 4, this thread stages the 4-vectors 4 (tid % XQ) .. of x rows tid / XQ + t * 128 / XQ
    // of each step; a row past mr reads row mr - 1 instead (tile row m reaches only output row m, not stored).
    ulong xoff[MT * GGUF_MM_XQ / GGUF_MM_THREADS];
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the caller's xrow is written
#pragma unroll
    for (uint t = 0; t < MT * GGUF_MM_XQ / GGUF_MM_THREADS; ++t) {
        const uint m = tid / GGUF_MM_XQ + t * (GGUF_MM_THREADS / GGUF_MM_XQ);
        xoff[t] = ulong(xrow[min(m, mr - 1)]) * k + 4 * (tid % GGUF_MM_XQ);
    }
    // With STEPS > 1, k is a multiple of KT * STEPS (= QK): every step of a group is below k. The steps of a
    // group are written out so that each has its compile-time index.
    for (uint k0 = 0; k0 < k; k0 += KT * STEPS) {
        gguf_mm_step<0, MT, B, QK, S, CORE>(w, n0, N, k, k0, x, xrow, xoff, mr, wt, xt, tid, sm, sn, acc);
        if (STEPS > 1) {
            gguf_mm_step<STEPS / 2 ? 1 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + KT, x, xrow, xoff, mr, wt, xt, tid, sm,
                                                                  sn, acc);
        }
        if (STEPS > 2) {
            gguf_mm_step<STEPS / 4 ? 2 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + 2 * KT, x, xrow, xoff, mr, wt, xt, tid,
                                                                  sm, sn, acc);
            gguf_mm_step<STEPS / 4 ? 3 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + 3 * KT, x, xrow, xoff, mr, wt, xt, tid,
                                                                  sm, sn, acc);
        }
        if (STEPS > 4) {
            gguf_mm_step<STEPS / 8 ? 4 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + 4 * KT, x, xrow, xoff, mr, wt, xt, tid,
                                                                  sm, sn, acc);
            gguf_mm_step<STEPS / 8 ? 5 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + 5 * KT, x, xrow, xoff, mr, wt, xt, tid,
                                                                  sm, sn, acc);
            gguf_mm_step<STEPS / 8 ? 6 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + 6 * KT, x, xrow, xoff, mr, wt, xt, tid,
                                                                  sm, sn, acc);
            gguf_mm_step<STEPS / 8 ? 7 : 0, MT, B, QK, S, CORE>(w, n0, N, k, k0 + 7 * KT, x, xrow, xoff, mr, wt, xt, tid,
                                                                  sm, sn, acc);
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
#pragma unroll
    for (uint i = 0; i < AI; ++i) {
#pragma unroll
        for (uint j = 0; j < 4; ++j) {
            simdgroup_store(acc[4 * i + j], tile + (sm + 8 * i) * NT + sn + 8 * j, NT);
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint q = tid; q < MT * NT; q += GGUF_MM_THREADS) {
        const uint m = q / NT;
        const uint n = q % NT;
        if (m < mr && n0 + n < N) {
            float v = tile[q];
            if (has_bias) {
                v = v + bias[n0 + n];
            }
            out[ulong(orow[m]) * N + n0 + n] = gguf_round<T>(v);
        }
    }
}

// More rows than the mat-vec tier takes: a tile of 64 weight rows x 64 rows of x per threadgroup.
template <typename B, int QK, int S, typename CORE, typename X, typename T>
[[max_total_threads_per_threadgroup(GGUF_MM_THREADS)]] kernel void kernel_mul_mm(GGUF_MM_PARAMS(X, T)) {
    threadgroup float tile[GGUF_MM_TILE_FLOATS(GGUF_MM_X_ROWS)];
    threadgroup uint rows[GGUF_MM_X_ROWS];
    const uint m0 = tg.y * GGUF_MM_X_ROWS;
    if (tid < GGUF_MM_X_ROWS) {
        rows[tid] = m0 + tid;
    }
    gguf_mm_tile<GGUF_MM_X_ROWS, B, QK, S, CORE, X, T>(w, tg.x * GGUF_MM_ROWS, uint(N), uint(K), x, rows, rows,
                                                       min(uint(M) - m0, GGUF_MM_X_ROWS), bias, has_bias != 0,
                                                       out, tile, tid, sg);
}

// Mixture of experts. Slot i = (t, u) = (i / U, i % U) of ids (T, U): out[i] = W[ids[i]] @ x[t, u % Ux].
// Slots slots[0 .. n - 1], all routed to expert e, against weight rows n0 .. n0 + R - 1 of that expert:
// the mat-vec core with the slots as its rows, so a slot gets the bits of a one-row linear.
template <typename B, int QK, typename CORE, typename X, uint R>
inline void gguf_id_rows(device const uchar *w, uint e, uint n0, uint N, uint K, uint U, uint Ux,
                         device const X *x, thread const uint *slots, uint n, device float *out, ushort lane,
                         threadgroup const uint *stage) {
    const uint swap = gguf_mv_slot_swap(n, lane);
    uint xrow[GGUF_MATMUL_X_ROWS];
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        const uint slot = m ^ swap;
        xrow[m] = slot < n ? (slots[slot] / U) * Ux + (slots[slot] % U) % Ux : 0u;
    }
    const ulong bpr = ulong(K / QK) * sizeof(B);
    float acc[R * GGUF_MATMUL_X_ROWS] = {};
    gguf_mv_accumulate<R>(CORE(), w + ulong(e) * N * bpr, n0, N, K, x, xrow, n, lane, acc, stage);
    gguf_mv_store<R>(acc, n, slots, n0, N, out, false, out, lane);
}

// A slot whose id is outside [0, E): nothing is read, its row is NaN (visible, never a wrong expert).
inline void gguf_id_invalid(device float *out, uint slot, uint n0, uint N) {
    for (uint r = 0; r < GGUF_MV_ROWS && n0 + r < N; ++r) {
        out[ulong(slot) * N + n0 + r] = NAN;
    }
}

// One slot per threadgroup row (grid y = T * U): the decode case, T = 1.
template <typename B, int QK, typename CORE, typename X>
[[max_total_threads_per_threadgroup(GGUF_MV_THREADS)]] kernel void kernel_mul_mv_id(GGUF_MV_ID_PARAMS(X)) {
    GGUF_MV_STAGE(CORE, stage, sg * GGUF_SIMD_WIDTH + lane)
    const uint n0 = (tg.x * GGUF_MV_SIMDGROUPS + sg) * GGUF_MV_ROWS;
    if (n0 >= N) {
        return;
    }
    uint slots[GGUF_MATMUL_X_ROWS] = {tg.y};
    const int e = ids[tg.y];
    if (e < 0 || ulong(e) >= E) {
        if (lane == 0) {
            gguf_id_invalid(out, tg.y, n0, uint(N));
        }
        return;
    }
    gguf_id_rows<B, QK, CORE, X, GGUF_MV_ROWS>(w, uint(e), n0, uint(N), uint(K), uint(U), uint(Ux), x, slots, 1,
                                               out, lane, stage);
}

// More tokens (the matrix tier of mul_mat_id), in two launches and no host sort or sync:
// kernel_mul_mm_id_map (grid E groups of one simdgroup): group e lists the slots routed to expert e in
//   increasing slot order, map[E + e * n_slots + j], j < map[e] = their count (a ballot per 32 ids), and group
//   0 also writes the NaN rows of slots whose id is outside [0, E);
// kernel_mul_mm_id (grid (N / 64, E, Z)): the group (x, e, z) takes the windows z, z + Z, ... of 64 of expert
//   e's slots (one window when no token repeats an expert and Z = ceil(T / 64)) and computes their 64 x 64
//   tile with gguf_mm_tile, x rows gathered by slot. So each expert's weights are decoded once per 64 of its
//   slots, and a slot gets the bits of a row of the matrix tier on its expert.
template <typename B>
[[max_total_threads_per_threadgroup(GGUF_SIMD_WIDTH)]] kernel void kernel_mul_mm_id_map(
    device const int *ids [[buffer(2)]], device float *out [[buffer(3)]], device uint *map [[buffer(4)]],
    constant ulong &N [[buffer(6)]], constant ulong &E [[buffer(7)]], constant ulong &n_slots [[buffer(10)]],
    uint e [[threadgroup_position_in_grid]], ushort lane [[thread_index_in_simdgroup]]) {
    uint count = 0;
    for (uint i0 = 0; i0 < n_slots; i0 += GGUF_SIMD_WIDTH) {
        const uint i = i0 + lane;
        const int id = i < n_slots ? ids[i] : -1;
        const bool mine = i < n_slots && id >= 0 && uint(id) == e;
        const uint mask = uint(ulong(simd_ballot(mine)));
        if (mine) {
            map[E + e * n_slots + count + popcount(mask & ((1u << lane) - 1u))] = i;
        }
        count += popcount(mask);
        if (e == 0 && i < n_slots && (id < 0 || ulong(id) >= E)) {
            for (uint n = 0; n < N; ++n) {
                out[ulong(i) * N + n] = NAN;
            }
        }
    }
    if (lane == 0 && e < E) {
        map[e] = count;
    }
}

template <typename B, int QK, int S, typename CORE, typename X>
[[max_total_threads_per_threadgroup(GGUF_MM_THREADS)]] kernel void kernel_mul_mm_id(GGUF_MM_ID_PARAMS(X)) {
    constexpr uint MT = GGUF_MM_X_ROWS;
    threadgroup float tile[GGUF_MM_TILE_FLOATS(MT)];
    threadgroup uint xrow[MT];
    threadgroup uint orow[MT];
    const uint e = tg.y;
    const uint count = map[e];
    const device uint *slots = map + E + ulong(e) * n_slots;
    const ulong bpr = ulong(K / QK) * sizeof(B);
    for (uint w0 = tg.z * MT; w0 < count; w0 += groups.z * MT) {
        const uint mr = min(count - w0, MT);
        threadgroup_barrier(mem_flags::mem_threadgroup);  // the previous window's rows are read
        if (tid < MT) {
            const uint slot = tid < mr ? slots[w0 + tid] : 0u;
            xrow[tid] = (slot / uint(U)) * uint(Ux) + (slot % uint(U)) % uint(Ux);
            orow[tid] = slot;
        }
        gguf_mm_tile<MT, B, QK, S, CORE, X, float>(w + ulong(e) * N * bpr, tg.x * GGUF_MM_ROWS, uint(N), uint(K), x,
                                                   xrow, orow, mr, nullptr, false, out, tile, tid, sg);
    }
}

// Host names for one (type, activation, output) combination; CORE: the mat-vec tier's order.
#define GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, XN, X, TN, T)                                 \
    template [[host_name("mul_mv_" #NAME "_" #XN "_" #TN)]] kernel void                          \
    kernel_mul_mv<CORE, X, T>(GGUF_MM_PARAMS(X, T));                                             \
    template [[host_name("mul_mm_" #NAME "_" #XN "_" #TN)]] kernel void                          \
    kernel_mul_mm<B, QK, S, CORE, X, T>(GGUF_MM_PARAMS(X, T));

#define GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, S, CORE, XN, X)                                     \
    template [[host_name("mul_mv_id_" #NAME "_" #XN)]] kernel void                               \
    kernel_mul_mv_id<B, QK, CORE, X>(GGUF_MV_ID_PARAMS(X));                                      \
    template [[host_name("mul_mm_id_" #NAME "_" #XN)]] kernel void                               \
    kernel_mul_mm_id<B, QK, S, CORE, X>(GGUF_MM_ID_PARAMS(X));

#define GGUF_MATMUL_ID_MAP_INSTANCE(NAME, B)                                                     \
    template [[host_name("mul_mm_id_map_" #NAME)]] kernel void kernel_mul_mm_id_map<B>(          \
        device const int *ids [[buffer(2)]], device float *out [[buffer(3)]],                    \
        device uint *map [[buffer(4)]], constant ulong &N [[buffer(6)]],                         \
        constant ulong &E [[buffer(7)]], constant ulong &n_slots [[buffer(10)]],                 \
        uint e [[threadgroup_position_in_grid]], ushort lane [[thread_index_in_simdgroup]]);

// Activations f32/f16/bf16; output float32 (mul_mat_vec, mul_mat_id) or the activation type (linear).
#define GGUF_MATMUL_INSTANCES(NAME, B, QK, S, CORE)                                              \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, f32, float, f32, float)                           \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, f16, half, f32, float)                            \
    GGUF_IF_BFLOAT(GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, bf16, bfloat, f32, float))         \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, f16, half, f16, half)                             \
    GGUF_IF_BFLOAT(GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, bf16, bfloat, bf16, bfloat))       \
    GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, S, CORE, f32, float)                                    \
    GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, S, CORE, f16, half)                                     \
    GGUF_IF_BFLOAT(GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, S, CORE, bf16, bfloat))                  \
    GGUF_MATMUL_ID_MAP_INSTANCE(NAME, B)

// A quantized type: sub-block s of a row is sub-block s % (QK / S) of block s / (QK / S).
#define GGUF_MM_DECODE(NAME)                                                                     \
    inline void gguf_mm_decode(device const block_##NAME *row, uint s, uint, thread float *y) {  \
        constexpr uint SUBS = GGUF_QK_##NAME / GGUF_SUB_##NAME;                                  \
        dequantize_##NAME(row + s / SUBS, ushort(s % SUBS), y);                                  \
    }
// A quantized type with a factored form (launch.MV_FACTORED): its file defines gguf_mv_quad and
// gguf_mv_codes; the mat-vec tier uses them, mul_mm the decode function.
#define GGUF_MATMUL_FACTORED_KERNELS(NAME)                                                       \
    GGUF_MM_DECODE(NAME)                                                                         \
    template <>                                                                                  \
    struct gguf_mm_factored<block_##NAME> {                                                      \
        enum { value = GGUF_MM_FACTORED_##NAME, part_group = GGUF_MM_PART_GROUP_##NAME };        \
    };                                                                                           \
    typedef gguf_factored_core<block_##NAME, GGUF_QK_##NAME, GGUF_MV_LAYOUT_##NAME> gguf_core_##NAME; \
    template <>                                                                                  \
    struct gguf_mv_wide_m<gguf_core_##NAME> {                                                    \
        enum { value = GGUF_MV_WIDE_M_##NAME };                                                  \
    };                                                                                           \
    GGUF_MATMUL_INSTANCES(NAME, block_##NAME, GGUF_QK_##NAME, GGUF_SUB_##NAME, gguf_core_##NAME)

// A float type: the weights are IN elements, widened by float.metal's gguf_load.
// (With K a multiple of 4, a whole sub-block is read as 4-vectors, gguf_mv_load4: the same values.)
#define GGUF_MATMUL_FLOAT_KERNELS(NAME, IN)                                                      \
    inline void gguf_mm_decode(device const IN *row, uint s, uint K, thread float *y) {          \
        const uint first = s * GGUF_SUB_##NAME;                                                  \
        if (K % 4 == 0 && first + GGUF_SUB_##NAME <= K) {                                        \
            for (uint j = 0; j < GGUF_SUB_##NAME; j += 4) {                                      \
                const float4 v = gguf_mv_load4(row + first + j);                                 \
                y[j] = v.x;                                                                      \
                y[j + 1] = v.y;                                                                  \
                y[j + 2] = v.z;                                                                  \
                y[j + 3] = v.w;                                                                  \
            }                                                                                    \
            return;                                                                              \
        }                                                                                        \
        const uint count = min(uint(GGUF_SUB_##NAME), K - first);                                \
        for (uint j = 0; j < count; ++j) {                                                       \
            y[j] = gguf_load(row + first + j);                                                   \
        }                                                                                        \
    }                                                                                            \
    typedef gguf_float_core<IN> gguf_core_##NAME;                                                \
    GGUF_MATMUL_INSTANCES(NAME, IN, 1, GGUF_SUB_##NAME, gguf_core_##NAME)

#endif
