// Compute on packed weights (Metal): y = x @ W^T (+ bias) and the mixture-of-experts form, for every type.
//
// Each <type>.metal file ends with GGUF_MATMUL_KERNELS(<type>) (float.metal: GGUF_MATMUL_FLOAT_KERNELS),
// which instantiates the kernel templates below over the type's own decode function
// dequantize_<type>(block, sub, y) -- the one definition of the format -- or, for the types with a factored
// form (launch.MV_FACTORED), GGUF_MATMUL_FACTORED_KERNELS(<type>): the same, with the mat-vec tier on the
// factored access its file defines next to the decode function (gguf_mv_quad, gguf_mv_codes; see
// gguf_mv_accumulate for gguf_factored_core). Launch geometry (the GGUF_MV_* and GGUF_MM_* constants) is
// described once in gguf_dequant/launch.py and generated into gguf_types.h.
//
// Two tiers (contract v2): mat-vec (mul_mv for M <= 8, mul_mv_id, mul_mm_id) and matrix (mul_mm). Within
// a tier one order, so a row's result never depends on M, on its position in the batch or on the other
// slots of mul_mat_id; the tiers differ in bits for the factored types. The decode-exact order (mul_mm;
// the mat-vec tier of the other types):
//   A weight row of K elements is cut into NS = ceil(K / S) sub-blocks of S = GGUF_SUB_<type> elements
//   (the decode unit; the float types use S = 8 and a shorter last sub-block). Lane l (0..31) of a
//   simdgroup owns the sub-blocks s = l, l + 32, l + 64, ... and accumulates, in that order and within a
//   sub-block in element order, acc = fma(w_k, x_k, acc) starting from acc = +0. Then y = simd_sum(acc)
//   over the 32 lanes, then y + bias[n] (one f32 addition, only when a bias is given), then one rounding
//   to the output type. Explicit fma() makes the chain independent of the compiler's contraction choices.
// Error bound (per output, y_exact in float64, u = 2^-24):
//   |y - y_exact| <= gamma_n * (sum_k |w_k x_k| + |bias|),  gamma_n = n u / (1 - n u),
//   n = S * ceil(NS / 32) + 31 (+ 1 with a bias): the longest lane chain (one rounding per fma), then
//   simd_sum (5 additions on a lane's path for a tree; 31 covers any order, and Apple does not document
//   its order), then the bias addition. launch.matmul_error_constant(qtype, K, bias) computes n.
//
// Kernels (host names; X = activation type, T = output type, f32/f16/bf16; T is float or X):
//   mul_mv_<type>_<X>_<T>    1..8 activation rows per threadgroup (grid y = ceil(M / 8)). A threadgroup of
//                            GGUF_MV_SIMDGROUPS simdgroups; simdgroup g owns weight rows
//                            n0 = (tg.x * GGUF_MV_SIMDGROUPS + g) * GGUF_MV_ROWS .. + GGUF_MV_ROWS; each lane
//                            decodes each of its sub-blocks (factored: reads each block part's codes)
//                            once into registers and applies it to every activation row of the tile
//                            (weights read once per 8 rows).
//   mul_mm_<type>_<X>_<T>    more rows: a threadgroup of GGUF_MM_SIMDGROUPS simdgroups owns GGUF_MM_ROWS
//                            weight rows and 8 * GGUF_MM_SIMDGROUPS activation rows; per stripe of 32
//                            sub-blocks it decodes the weight tile once into threadgroup memory as float32
//                            (GGUF_MM_ROWS * 32 * S floats, at most 16 KiB), then every simdgroup applies it
//                            to its 8 rows (weights read once per 32 rows). Same lane <-> sub-block mapping,
//                            so the same bits as the decode-exact mul_mv.
//   mul_mv_id_<type>_<X>     out[t, u] = W[ids[t, u]] @ x[t, u % Ux], float32, one token (T = 1): grid y =
//                            U slots, each a one-row mul_mv on the expert chosen on the GPU.
//   mul_mm_id_<type>_<X>     the same for T > 1 without a host sort or sync: grid (N tiles, E, windows of
//                            GGUF_ID_WINDOW slots); the threadgroup of expert e finds its slots in its window
//                            (a ballot per 32 ids) and runs the mul_mv core on up to 8 of them at a time.
//                            Both: a slot gets the bits of a one-row linear on its expert; an id outside
//                            [0, E) reads nothing and its output row is NaN.
// Buffers: 0 = weight bytes, 1 = x, 2 = bias (float32; any buffer when has_bias == 0) or ids (int32),
// 3 = out, then 64-bit scalars: mul_mv/mul_mm 4 = K, 5 = N, 6 = M, 7 = has_bias;
// mul_mv_id/mul_mm_id 4 = K, 5 = N, 6 = E, 7 = U, 8 = Ux (x rows per token: 1 or U), mul_mm_id 9 = T * U.
#pragma once

#if defined(GGUF_CPU) || defined(GGUF_NO_MATMUL)

// The CPU backend has its own matmul (cpu/), and the run-time path's dequantize-only library has none:
// the per-type lines expand to nothing there (unless the CPU build defines the macros first).
#ifndef GGUF_MATMUL_KERNELS
#define GGUF_MATMUL_KERNELS(NAME)
#endif
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
// GGUF_MATMUL_KERNELS line (found by argument-dependent lookup on its block type); the float types' are
// declared here, for the kernel templates to see, and defined by GGUF_MATMUL_FLOAT_KERNELS in float.metal
// over its gguf_load (elements 8s .. min(8s + 8, K)).
inline void gguf_mm_decode(device const float *row, uint s, uint K, thread float *y);
inline void gguf_mm_decode(device const half *row, uint s, uint K, thread float *y);
inline void gguf_mm_decode(device const bfloat *row, uint s, uint K, thread float *y);
// Elements k .. k + 3 of a float row as float32, exactly (float.metal; k a multiple of 4, the row 16-byte
// aligned for float, 8-byte for half and bfloat): the mat-vec tier's wide loads.
float4 gguf_mv_load4(device const float *p);
float4 gguf_mv_load4(device const half *p);
float4 gguf_mv_load4(device const bfloat *p);

// Elements in sub-block s: S, except the last sub-block of a float row (QK == 1) when S does not divide K.
template <int QK, int S>
inline uint gguf_sub_count(uint s, uint K) {
    if (QK == 1) {
        return min(uint(S), K - s * S);
    }
    return S;
}

// acc = fma(w[j * WS], x[j], acc) for j = 0 .. count - 1, in order (count is the constant S after
// inlining, except for the last sub-block of a float row).
template <uint WS, typename WP, typename XP>
inline float gguf_fma_chain(WP w, XP x, uint count, float acc) {
    for (uint j = 0; j < count; ++j) {
        acc = fma(w[j * WS], float(x[j]), acc);
    }
    return acc;
}

// Reduce acc[r][m] over the simdgroup and write out[orow[m], n0 + r] (+ bias) for the weight rows that
// exist. Every lane calls simd_sum for the same (r, m) sequence: mr is uniform across the simdgroup.
template <uint R, typename T>
inline void gguf_mm_store(thread const float *acc, uint mr, thread const uint *orow, uint n0, uint N,
                          device const float *bias, bool has_bias, device T *out, ushort lane) {
    for (uint r = 0; r < R; ++r) {
        for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
            if (m < mr) {
                float v = simd_sum(acc[r * GGUF_MATMUL_X_ROWS + m]);
                if (lane == ((r * GGUF_MATMUL_X_ROWS + m) % GGUF_SIMD_WIDTH) && n0 + r < N) {
                    if (has_bias) {
                        v = v + bias[n0 + r];
                    }
                    out[ulong(orow[m]) * N + n0 + r] = gguf_round<T>(v);
                }
            }
        }
    }
}

// The mat-vec tier's two orders, as tag types that select gguf_mv_accumulate's overload: the decode-exact
// order (every type: sub-blocks decoded to float32, one fma per element) and the factored order (the types
// of launch.MV_FACTORED, whose file defines gguf_mv_quad and gguf_mv_codes).
template <typename B, int QK, int S>
struct gguf_decode_core {};
template <typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET>
struct gguf_factored_core {};

// One simdgroup: weight rows n0 .. n0 + R - 1 (those < N) against activation rows x[xrow[m]] (row
// stride K), m < mr, accumulated into acc[r * GGUF_MATMUL_X_ROWS + m] by this lane's sub-blocks.
template <uint R, typename B, int QK, int S, typename X>
inline void gguf_mv_accumulate(gguf_decode_core<B, QK, S>, device const uchar *w, uint n0, uint N, uint K,
                               device const X *x, thread const uint *xrow, uint mr, ushort lane,
                               thread float *acc) {
    const ulong bpr = ulong(K / QK) * sizeof(B);
    const uint ns = (K + S - 1) / S;
    for (uint s = lane; s < ns; s += GGUF_SIMD_WIDTH) {
        const uint count = gguf_sub_count<QK, S>(s, K);
        if (mr == 1) {
            // One activation row (decoding, one mul_mat_id slot): read its sub-block once for all R rows.
            float xs[S];
            device const X *xr = x + ulong(xrow[0]) * K + s * S;
            for (uint j = 0; j < count; ++j) {
                xs[j] = float(xr[j]);
            }
            for (uint r = 0; r < R; ++r) {
                if (n0 + r < N) {
                    float v[S];
                    gguf_mm_decode(reinterpret_cast<device const B *>(w + ulong(n0 + r) * bpr), s, K, v);
                    acc[r * GGUF_MATMUL_X_ROWS] = gguf_fma_chain<1>(v, xs, count, acc[r * GGUF_MATMUL_X_ROWS]);
                }
            }
            continue;
        }
        for (uint r = 0; r < R; ++r) {
            if (n0 + r < N) {
                float v[S];
                gguf_mm_decode(reinterpret_cast<device const B *>(w + ulong(n0 + r) * bpr), s, K, v);
                thread float *a = acc + r * GGUF_MATMUL_X_ROWS;
                for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
                    if (m < mr) {
                        a[m] = gguf_fma_chain<1>(v, x + ulong(xrow[m]) * K + s * S, count, a[m]);
                    }
                }
            }
        }
    }
}

// A type without a value table looked up by shuffles (gguf_mv_table): no entry.
template <typename B>
GGUF_MV_INLINE float gguf_mv_table(device const B *, ushort) {
    return 0.0f;
}

// The factored order (launch.MV_FACTORED, launch.matvec_error_constant): lane l takes part p = l % PARTS
// of blocks l / PARTS, l / PARTS + 32 / PARTS, ...; in each, QUADS quads of 4 contiguous elements
// (gguf_mv_quad: where they sit) in RUNS runs of QUADS / RUNS quads sharing a scale a and an offset o
// (gguf_mv_codes: the codes q and each run's a, o; w = a q + o). Per block and run, in order:
// dq = fma chain of q x from +0 (quads, then elements, in order), sx = sum of x by additions in the same
// order (OFFSET only), acc = fma(a, dq, acc), acc = fma(o, sx, acc). x is loaded as 4-vectors once per
// block and activation row and applied to all R weight rows; each weight row's codes are read once per
// block and applied to all mr activation rows (one row: each weight row's codes are used as soon as they
// are read, so few are live at once; the same operations per output). Rows past N read row N - 1 (never
// stored).

// One activation row's x values of a block part (and, with offsets, the sums of each run's x).
template <typename B, int QUADS, int RUNS, int OFFSET, typename X>
GGUF_MV_INLINE void gguf_mv_x(device const B *row, device const X *xb, ushort part, thread float4 *xs,
                              thread float *sx) {
    constexpr uint QPR = QUADS / RUNS;
#pragma unroll
    for (uint j = 0; j < QUADS; ++j) {
        xs[j] = float4(*reinterpret_cast<device const vec<X, 4> *>(xb + gguf_mv_quad(row, part, j)));
    }
#pragma unroll
    for (uint u = 0; u < RUNS; ++u) {
        sx[u] = 0.0f;
        if (OFFSET) {
            sx[u] = xs[u * QPR].x;
            sx[u] = sx[u] + xs[u * QPR].y;
            sx[u] = sx[u] + xs[u * QPR].z;
            sx[u] = sx[u] + xs[u * QPR].w;
#pragma unroll
            for (uint j = u * QPR + 1; j < u * QPR + QPR; ++j) {
                sx[u] = sx[u] + xs[j].x;
                sx[u] = sx[u] + xs[j].y;
                sx[u] = sx[u] + xs[j].z;
                sx[u] = sx[u] + xs[j].w;
            }
        }
    }
}

// One output's operations for one block part, in the order above.
template <int QUADS, int RUNS, int OFFSET>
GGUF_MV_INLINE float gguf_mv_dot(thread const float4 *q, thread const float *a, thread const float *o,
                                 thread const float4 *xs, thread const float *sx, float s) {
    constexpr uint QPR = QUADS / RUNS;
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
        if (OFFSET) {
            s = fma(o[u], sx[u], s);
        }
    }
    return s;
}

template <uint R, typename B, int QK, int PARTS, int QUADS, int RUNS, int OFFSET, typename X>
GGUF_MV_INLINE void gguf_mv_accumulate(gguf_factored_core<B, QK, PARTS, QUADS, RUNS, OFFSET>, device const uchar *w,
                                       uint n0, uint N, uint K, device const X *x, thread const uint *xrow,
                                       uint mr, ushort lane, thread float *acc) {
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
    const float table = gguf_mv_table(rows[0], lane);
    const uint steps = (nb + STEP - 1) / STEP;
    for (uint step = 0; step < steps; ++step) {
        const uint first = step * STEP + lane / PARTS;
        const bool live = first < nb;
        const uint ib = live ? first : nb - 1;
        float4 xs[QUADS];
        float sx[RUNS];
        if (mr == 1) {
            gguf_mv_x<B, QUADS, RUNS, OFFSET>(rows[0], x + ulong(xrow[0]) * K + ulong(ib) * QK, part, xs, sx);
#pragma unroll
            for (uint r = 0; r < R; ++r) {
                float4 q[QUADS];
                float a[RUNS];
                float o[RUNS];
                gguf_mv_codes(rows[r] + ib, part, table, q, a, o);
                if (live) {
                    acc[r * GGUF_MATMUL_X_ROWS] =
                        gguf_mv_dot<QUADS, RUNS, OFFSET>(q, a, o, xs, sx, acc[r * GGUF_MATMUL_X_ROWS]);
                }
            }
            continue;
        }
        float4 q[R][QUADS];
        float a[R][RUNS];
        float o[R][RUNS];
#pragma unroll
        for (uint r = 0; r < R; ++r) {
            gguf_mv_codes(rows[r] + ib, part, table, q[r], a[r], o[r]);
        }
        if (!live) {
            continue;
        }
#pragma unroll
        for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
            if (m < mr) {
                gguf_mv_x<B, QUADS, RUNS, OFFSET>(rows[0], x + ulong(xrow[m]) * K + ulong(ib) * QK, part, xs, sx);
#pragma unroll
                for (uint r = 0; r < R; ++r) {
                    acc[r * GGUF_MATMUL_X_ROWS + m] =
                        gguf_mv_dot<QUADS, RUNS, OFFSET>(q[r], a[r], o[r], xs, sx, acc[r * GGUF_MATMUL_X_ROWS + m]);
                }
            }
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
                                       thread float *acc) {
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
    GGUF_ID_BUFFERS(X), constant ulong &n_slots [[buffer(9)]],                                  \
        uint3 tg [[threadgroup_position_in_grid]], ushort sg [[simdgroup_index_in_threadgroup]], \
        ushort lane [[thread_index_in_simdgroup]]

// Mat-vec: up to 8 activation rows per threadgroup, weights decoded into registers; CORE is the order.
template <typename CORE, typename X, typename T>
[[max_total_threads_per_threadgroup(GGUF_MV_THREADS)]] kernel void kernel_mul_mv(GGUF_MM_PARAMS(X, T)) {
    constexpr uint R = GGUF_MV_ROWS;
    const uint n0 = (tg.x * GGUF_MV_SIMDGROUPS + sg) * R;
    const uint m0 = tg.y * GGUF_MATMUL_X_ROWS;
    if (n0 >= N || m0 >= M) {
        return;  // the whole simdgroup: nothing to compute
    }
    const uint mr = min(uint(M) - m0, GGUF_MATMUL_X_ROWS);
    uint rows[GGUF_MATMUL_X_ROWS];
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        rows[m] = m;
    }
    float acc[R * GGUF_MATMUL_X_ROWS] = {};
    gguf_mv_accumulate<R>(CORE(), w, n0, uint(N), uint(K), x + ulong(m0) * K, rows, mr, lane, acc);
    gguf_mm_store<R>(acc, mr, rows, n0, uint(N), bias, has_bias != 0, out + ulong(m0) * N, lane);
}

// More rows: a weight tile decoded once into threadgroup memory per stripe of 32 sub-blocks, stored
// [row][element of the sub-block][lane] so that lanes touch consecutive words.
template <typename B, int QK, int S, typename X, typename T>
[[max_total_threads_per_threadgroup(GGUF_MM_THREADS)]] kernel void kernel_mul_mm(GGUF_MM_PARAMS(X, T)) {
    constexpr uint R = GGUF_MM_ROWS;
    constexpr uint THREADS = GGUF_MM_SIMDGROUPS * GGUF_SIMD_WIDTH;
    threadgroup float tile[R * S * GGUF_SIMD_WIDTH];
    const uint n0 = tg.x * R;
    const uint m0 = (tg.y * GGUF_MM_SIMDGROUPS + sg) * GGUF_MATMUL_X_ROWS;
    const uint mr = m0 < M ? min(uint(M) - m0, GGUF_MATMUL_X_ROWS) : 0u;  // 0: only helps to decode
    const uint k = uint(K);
    const uint ns = (k + S - 1) / S;
    const ulong bpr = ulong(k / QK) * sizeof(B);
    device const X *xm = x + ulong(m0) * K;
    float acc[R * GGUF_MATMUL_X_ROWS] = {};
    for (uint s0 = 0; s0 < ns; s0 += GGUF_SIMD_WIDTH) {
        for (uint q = tid; q < R * GGUF_SIMD_WIDTH; q += THREADS) {
            const uint r = q / GGUF_SIMD_WIDTH;
            const uint l = q % GGUF_SIMD_WIDTH;
            float v[S] = {};
            if (n0 + r < N && s0 + l < ns) {
                gguf_mm_decode(reinterpret_cast<device const B *>(w + ulong(n0 + r) * bpr), s0 + l, k, v);
            }
            for (uint j = 0; j < S; ++j) {
                tile[(r * S + j) * GGUF_SIMD_WIDTH + l] = v[j];
            }
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        const uint s = s0 + lane;
        if (s < ns) {
            const uint count = gguf_sub_count<QK, S>(s, k);
            for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
                if (m < mr) {
                    // x read once per row, the tile once per (row, weight row): threadgroup reads are cheap.
                    float xs[S];
                    device const X *xr = xm + ulong(m) * K + s * S;
                    for (uint j = 0; j < count; ++j) {
                        xs[j] = float(xr[j]);
                    }
                    for (uint r = 0; r < R; ++r) {
                        threadgroup const float *t = tile + r * S * GGUF_SIMD_WIDTH + lane;
                        acc[r * GGUF_MATMUL_X_ROWS + m] =
                            gguf_fma_chain<GGUF_SIMD_WIDTH>(t, xs, count, acc[r * GGUF_MATMUL_X_ROWS + m]);
                    }
                }
            }
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    uint rows[GGUF_MATMUL_X_ROWS];
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        rows[m] = m;
    }
    gguf_mm_store<R>(acc, mr, rows, n0, uint(N), bias, has_bias != 0, out + ulong(m0) * N, lane);
}

// Mixture of experts. Slot i = (t, u) = (i / U, i % U) of ids (T, U): out[i] = W[ids[i]] @ x[t, u % Ux].
// Slots slots[0 .. n - 1], all routed to expert e, against weight rows n0 .. n0 + R - 1 of that expert:
// the mat-vec core with the slots as its rows, so a slot gets the bits of a one-row linear.
template <typename B, int QK, typename CORE, typename X, uint R>
inline void gguf_id_rows(device const uchar *w, uint e, uint n0, uint N, uint K, uint U, uint Ux,
                         device const X *x, thread const uint *slots, uint n, device float *out, ushort lane) {
    uint xrow[GGUF_MATMUL_X_ROWS];
    for (uint m = 0; m < GGUF_MATMUL_X_ROWS; ++m) {
        xrow[m] = m < n ? (slots[m] / U) * Ux + (slots[m] % U) % Ux : 0u;
    }
    const ulong bpr = ulong(K / QK) * sizeof(B);
    float acc[R * GGUF_MATMUL_X_ROWS] = {};
    gguf_mv_accumulate<R>(CORE(), w + ulong(e) * N * bpr, n0, N, K, x, xrow, n, lane, acc);
    gguf_mm_store<R>(acc, n, slots, n0, N, out, false, out, lane);
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
                                               out, lane);
}

// Grouped by expert (grid (N tiles, E, windows of GGUF_ID_WINDOW slots)): the threadgroup of expert e
// finds its slots in its window of ids, 32 at a time with a ballot, and applies each decoded weight
// block to up to 8 of them, so an expert's weights are read once per 8 of its slots in the window
// instead of once per slot. The ballot mask is uniform, so control flow stays uniform in the simdgroup.
template <typename B, int QK, typename CORE, typename X>
[[max_total_threads_per_threadgroup(GGUF_MV_THREADS)]] kernel void kernel_mul_mm_id(GGUF_MM_ID_PARAMS(X)) {
    const uint n0 = (tg.x * GGUF_MV_SIMDGROUPS + sg) * GGUF_MV_ROWS;
    if (n0 >= N) {
        return;
    }
    const uint e = tg.y;
    const uint first = tg.z * GGUF_ID_WINDOW;
    const uint last = min(first + GGUF_ID_WINDOW, uint(n_slots));
    uint slots[GGUF_MATMUL_X_ROWS] = {};
    uint n = 0;
    for (uint i0 = first; i0 < last; i0 += GGUF_SIMD_WIDTH) {
        const uint i = i0 + lane;
        const int id = i < last ? ids[i] : 0;
        const bool valid = id >= 0 && ulong(id) < E;
        if (i < last && !valid && e == 0) {
            gguf_id_invalid(out, i, n0, uint(N));
        }
        uint mask = uint(ulong(simd_ballot(i < last && valid && uint(id) == e)));
        while (mask != 0) {
            slots[n++] = i0 + popcount((mask & (~mask + 1)) - 1);  // the lowest matching lane
            mask &= mask - 1;
            if (n == GGUF_MATMUL_X_ROWS) {
                gguf_id_rows<B, QK, CORE, X, GGUF_MV_ROWS>(w, e, n0, uint(N), uint(K), uint(U), uint(Ux), x,
                                                           slots, n, out, lane);
                n = 0;
            }
        }
    }
    if (n > 0) {
        gguf_id_rows<B, QK, CORE, X, GGUF_MV_ROWS>(w, e, n0, uint(N), uint(K), uint(U), uint(Ux), x, slots, n,
                                                   out, lane);
    }
}

// Host names for one (type, activation, output) combination; CORE: the mat-vec tier's order.
#define GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, XN, X, TN, T)                                 \
    template [[host_name("mul_mv_" #NAME "_" #XN "_" #TN)]] kernel void                          \
    kernel_mul_mv<CORE, X, T>(GGUF_MM_PARAMS(X, T));                                             \
    template [[host_name("mul_mm_" #NAME "_" #XN "_" #TN)]] kernel void                          \
    kernel_mul_mm<B, QK, S, X, T>(GGUF_MM_PARAMS(X, T));

#define GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, CORE, XN, X)                                        \
    template [[host_name("mul_mv_id_" #NAME "_" #XN)]] kernel void                               \
    kernel_mul_mv_id<B, QK, CORE, X>(GGUF_MV_ID_PARAMS(X));                                      \
    template [[host_name("mul_mm_id_" #NAME "_" #XN)]] kernel void                               \
    kernel_mul_mm_id<B, QK, CORE, X>(GGUF_MM_ID_PARAMS(X));

// Activations f32/f16/bf16; output float32 (mul_mat_vec, mul_mat_id) or the activation type (linear).
#define GGUF_MATMUL_INSTANCES(NAME, B, QK, S, CORE)                                              \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, f32, float, f32, float)                           \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, f16, half, f32, float)                            \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, bf16, bfloat, f32, float)                         \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, f16, half, f16, half)                             \
    GGUF_MATMUL_INSTANCE(NAME, B, QK, S, CORE, bf16, bfloat, bf16, bfloat)                       \
    GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, CORE, f32, float)                                       \
    GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, CORE, f16, half)                                        \
    GGUF_MATMUL_ID_INSTANCE(NAME, B, QK, CORE, bf16, bfloat)

// A quantized type: sub-block s of a row is sub-block s % (QK / S) of block s / (QK / S).
#define GGUF_MM_DECODE(NAME)                                                                     \
    inline void gguf_mm_decode(device const block_##NAME *row, uint s, uint, thread float *y) {  \
        constexpr uint SUBS = GGUF_QK_##NAME / GGUF_SUB_##NAME;                                  \
        dequantize_##NAME(row + s / SUBS, ushort(s % SUBS), y);                                  \
    }
#define GGUF_MATMUL_KERNELS(NAME)                                                                \
    GGUF_MM_DECODE(NAME)                                                                         \
    typedef gguf_decode_core<block_##NAME, GGUF_QK_##NAME, GGUF_SUB_##NAME> gguf_core_##NAME;    \
    GGUF_MATMUL_INSTANCES(NAME, block_##NAME, GGUF_QK_##NAME, GGUF_SUB_##NAME, gguf_core_##NAME)

// A quantized type with a factored form (launch.MV_FACTORED): its file defines gguf_mv_quad and
// gguf_mv_codes; the mat-vec tier uses them, mul_mm the decode function.
#define GGUF_MATMUL_FACTORED_KERNELS(NAME)                                                       \
    GGUF_MM_DECODE(NAME)                                                                         \
    typedef gguf_factored_core<block_##NAME, GGUF_QK_##NAME, GGUF_MV_LAYOUT_##NAME> gguf_core_##NAME; \
    GGUF_MATMUL_INSTANCES(NAME, block_##NAME, GGUF_QK_##NAME, GGUF_SUB_##NAME, gguf_core_##NAME)

// A float type: the weights are IN elements, widened by float.metal's gguf_load.
#define GGUF_MATMUL_FLOAT_KERNELS(NAME, IN)                                                      \
    inline void gguf_mm_decode(device const IN *row, uint s, uint K, thread float *y) {          \
        const uint first = s * GGUF_SUB_##NAME;                                                  \
        const uint count = min(uint(GGUF_SUB_##NAME), K - first);                                \
        for (uint j = 0; j < count; ++j) {                                                       \
            y[j] = gguf_load(row + first + j);                                                   \
        }                                                                                        \
    }                                                                                            \
    typedef gguf_float_core<IN> gguf_core_##NAME;                                                \
    GGUF_MATMUL_INSTANCES(NAME, IN, 1, GGUF_SUB_##NAME, gguf_core_##NAME)

#endif
