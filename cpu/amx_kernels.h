// The AMX tier of the CPU matmul (contract v2, README "Compute on packed weights"): M > 8 rows of bfloat16 x
// (linear, mul_mat_vec; the mat-vec tier keeps M <= 8 and every mul_mat_id slot, where it is faster), on the
// factored types of matvec_kernels.h, on CPUs with AMX-TILE and AMX-BF16 whose kernel grants the tile state.
// Included once, after matvec_kernels.h, by matvec_avx512bf16.cpp. The kernels themselves take any M. Three orders,
// each type in one (ScaledTypes, PartsTypes, FactoredTypes):
//
// Scaled order (Q8_0): weights are the A tile (16 output features x 32 codes of one chunk, the codes of F::codes:
// exact in bfloat16), x the B tile (16 pairs of K x up to 16 rows of x, built once per call). Per output (row m,
// feature n), in this order, whatever M, the rows beside m, the tiling or the thread count:
//   P     = TDPBF16PS of the chunk's 32 products from +0 (x below 2^-126 counts as zero; the hardware's order of
//           the float32 additions inside one instruction is not specified beyond round-to-nearest-even and
//           flushing to zero: see the bound);
//   acc   = fma(P, a, acc) in increasing chunk order, from +0, a the chunk's scale;
//   y     = acc [+ bias].
//
// Parts order (32-to-128-element types): the A tiles hold the scaled weight v = a * q (F::chunk_scale
// times F::codes in one float32 product, exact) as Parts<F> bfloat16 parts, each the next 8 significant bits of v
// (truncation: the parts sum to v exactly), so the tiles accumulate across all of K with no per-chunk scale work:
//   C     = +0, then for chunk g = 0, 1, ... and each part p (high first): C = TDPBF16PS(C, part p of chunk g,
//           x of chunk g) (exact products; x and weight parts below 2^-126 count as zero; the hardware adds C
//           once to the instruction's sum of products, probed: see the bound);
//           (offset types: Q4_1, Q5_1) after each step of 8 chunks (PARTS_STEP), C = TDPBF16PS(C, m, X) twice:
//           the step's offsets m_g (f16, exact as 2 bfloat16 parts) by the 3 exact bfloat16 parts of X_g, the
//           chunk's sum of x (as the mat-vec tier computes it), every pair of parts once (see parts_offset_row);
//   y     = C [+ bias].
//
// Factored order (256-element super-block types): every chunk scale of a block is a = d s, d the block's f16
// scale and s a small multiple of 1/8, so the code c = s q is exact in Factored<F> (1 or 2) bfloat16 parts; for
// offset types every offset is b_j = dmin m_j with m_j a small integer. Per block i, in increasing i:
//   C     = +0, then C = TDPBF16PS(C, part p of c of chunk g, x of chunk g) for the block's chunks g in increasing
//           order and each part p (high first);
//   O     = (offset types) TDPBF16PS from +0 of the entries m_j (A) by the 3 exact bfloat16 parts of X_j (B; X_j
//           the sum of x over offset j, as the mat-vec tier computes it), offset_tiles<F> instructions;
//   acc   = fma(C, d, acc) from +0, then acc = fnmadd(O, dmin, acc);
//   y     = acc [+ bias].
#include <type_traits>

namespace gguf_mv_avx512bf16 {

namespace amx {

// How an order groups the sums of x of types with offsets into B tiles: per step of PARTS_STEP chunks, each
// chunk's sum twice (parts order: one for each part of m_g), or per 256-element block (factored order).
enum class Sums { chunks, blocks };

constexpr int FEATURES = 16;     // output features per A tile (its rows)
constexpr int K_BLOCK = 32;      // chunks of K per pass: a pass's x (M x 1024 bfloat16) stays in L2

struct alignas(64) Vec {  // one zmm of 16 floats (or 32 bfloat16 codes) in memory
    float v[16];
};

struct alignas(64) TileConfig {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

// GCC 12's _tile_loadconfig tells the compiler that ldtilecfg reads 8 bytes of the configuration, so unless the
// caller clobbers memory afterwards, the stores of the rows and columns are dropped as dead (the tiles stay
// unconfigured: the next tile instruction faults): the asm input here makes all 64 bytes live.
inline void load_tile_config(const TileConfig &cfg) {
    asm volatile("" : : "m"(cfg));
    _tile_loadconfig(&cfg);
}

// Scaled order: tiles 0, 1: A (16 features x 32 codes); 2, 3: B (16 pairs x 16 rows of x); 4, 5: C (16 features
// x 16 rows). Two of each: one step's product runs while the previous one is drained.
inline void configure() {
    TileConfig cfg{};
    cfg.palette = 1;
    for (int i = 0; i < 6; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 64;
    load_tile_config(cfg);
}

// Parts order: tiles 0-3: C (16 features x 16 rows of x) of feature groups 0, 0, 1, 1 by x tiles 0, 1, 0, 1;
// 4, 5: A (16 features x 16 pairs) of groups 0, 1; 6, 7: B (16 pairs x 16 rows) of x tiles 0, 1.
inline void configure_parts() {
    TileConfig cfg{};
    cfg.palette = 1;
    for (int i = 0; i < 8; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 64;
    load_tile_config(cfg);
}

// One job's x as B tiles of 16 rows of x (zero rows pad the last, and a zero tile an odd count): per tile t and
// chunk g, 16 pairs x 16 rows, word bx[((t * chunks + g) * 16 + k) * 16 + r] = elements 32g + 2k, 32g + 2k + 1 of
// row 16t + r; for offset types the B tiles of their sums' parts, xp (see offset_tiles; the parts order's per step
// of PARTS_STEP chunks, the factored order's per block). Tile rows are 64 bytes
// apart whatever M: narrower strides make the tile loads and stores 3 times slower here.
struct Job {
    const MatvecJob *job;
    int64_t tiles, chunks, groups;
    std::vector<uint32_t> bx;
    std::vector<uint32_t> xp;
    std::vector<Vec> acc;     // per (group, tile): 16 vectors (parts order: a C tile) carried between passes
};

// The per-pass weights of one group of 16 features: per chunk, 16 rows of 32 codes, and the scales a of the 16
// features.
struct Weights {
    std::vector<Vec> w, a;
    explicit Weights(int64_t chunks) : w(chunks * FEATURES), a(chunks) {}
};

// Decodes chunks [g0, g1) of features n0 .. n0 + 15 (features past N repeat the last one; their outputs are
// not stored).
template <typename F>
void decode(const MatvecJob &job, int64_t n0, int64_t g0, int64_t g1, const Tables &table, Weights &wt) {
    for (int f = 0; f < FEATURES; ++f) {
        const int64_t n = std::min(n0 + f, job.N - 1);
        const typename F::Block *blocks = reinterpret_cast<const typename F::Block *>(job.w + n * job.row_bytes);
        for (int64_t i = g0 / F::CH; i < g1 / F::CH; ++i) {
            const typename F::Block *b = blocks + i;
            prefetch_ahead(b);
            const typename F::Scales s = F::scales(b, table);
            for (int c = 0; c < F::CH; ++c) {
                const int64_t g = i * F::CH + c - g0;
                _mm512_store_si512(wt.w[g * FEATURES + f].v, F::codes(b, c, table));
                wt.a[g].v[f] = _mm512_cvtss_f32(F::chunk_scale(s, c));
            }
        }
    }
}

// acc[n] (16 rows of x for feature n) += row n of the stored C tile times feature n's scale.
__attribute__((always_inline)) inline void drain(__m512 (&acc)[16], const float *c, const float *a) {
#pragma GCC unroll 16
    for (int n = 0; n < 16; ++n) acc[n] = _mm512_fmadd_ps(_mm512_load_ps(c + 16 * n), _mm512_set1_ps(a[n]), acc[n]);
}

// Chunks [g0, g1) of one tile of x against one group's weights (decoded from chunk g0), acc from +0 (g0 = 0) or
// carried in: chunks alternate between tiles 0, 2, 4 and 1, 3, 5, and chunk s + 2 is issued before chunk s is
// drained.
void tile_pass(const Weights &wt, const uint32_t *bx, int64_t g0, int64_t g1, Vec *carried) {
    asm volatile("" : : : "memory");  // the tile loads below read wt and bx (GCC's tileloadd has no memory clobber)
    __m512 acc[16];
#pragma GCC unroll 16
    for (int n = 0; n < 16; ++n) acc[n] = g0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(carried[n].v);
    const int64_t n = g1 - g0;
    const auto a_at = [&](int64_t s) { return wt.w[s * FEATURES].v; };
    const auto b_at = [&](int64_t s) { return bx + (g0 + s) * 256; };
    alignas(64) float c0[256], c1[256];
    _tile_loadd(0, a_at(0), 64);
    _tile_loadd(2, b_at(0), 64);
    _tile_zero(4);
    _tile_dpbf16ps(4, 0, 2);
    if (n > 1) {
        _tile_loadd(1, a_at(1), 64);
        _tile_loadd(3, b_at(1), 64);
        _tile_zero(5);
        _tile_dpbf16ps(5, 1, 3);
    }
    for (int64_t s = 0; s < n; s += 2) {
        _tile_stored(4, c0, 64);
        if (s + 2 < n) {
            _tile_loadd(0, a_at(s + 2), 64);
            _tile_loadd(2, b_at(s + 2), 64);
            _tile_zero(4);
            _tile_dpbf16ps(4, 0, 2);
        }
        drain(acc, c0, wt.a[s].v);
        if (s + 1 < n) {
            _tile_stored(5, c1, 64);
            if (s + 3 < n) {
                _tile_loadd(1, a_at(s + 3), 64);
                _tile_loadd(3, b_at(s + 3), 64);
                _tile_zero(5);
                _tile_dpbf16ps(5, 1, 3);
            }
            drain(acc, c1, wt.a[s + 1].v);
        }
    }
#pragma GCC unroll 16
    for (int n = 0; n < 16; ++n) _mm512_store_ps(carried[n].v, acc[n]);
}

// y = acc [+ bias] of one group and tile of x (acc[n]: feature n's 16 rows), rows below M and features below N.
inline void store(const MatvecJob &job, int64_t group, int64_t t, const Vec *acc) {
    const int64_t n0 = group * FEATURES;
    if (n0 >= job.N) return;
    // Row r of the output: lane r of the 16 accumulators, gathered.
    const int features = int(std::min<int64_t>(FEATURES, job.N - n0));
    const __mmask16 valid = __mmask16((1u << features) - 1);
    const __m512i lane_r = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(16));
    const __m512 bias = job.bias ? _mm512_maskz_loadu_ps(valid, job.bias + n0) : _mm512_setzero_ps();
    for (int64_t r = 0; r < 16 && t * 16 + r < job.M; ++r) {
        __m512 y = _mm512_i32gather_ps(lane_r, acc[0].v + r, 4);
        if (job.bias) y = _mm512_add_ps(y, bias);
        void *row = job.out_rows[t * 16 + r];
        // Rounded once, as store_output rounds (vector forms of the same conversions).
        switch (job.out_kind) {
            case OutKind::f32: _mm512_mask_storeu_ps(static_cast<float *>(row) + n0, valid, y); break;
            case OutKind::f16:
                _mm256_mask_storeu_epi16(static_cast<metal::half *>(row) + n0, valid,
                                         _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                break;
            case OutKind::bf16:
                _mm256_mask_storeu_epi16(static_cast<metal::bfloat *>(row) + n0, valid,
                                         bf16_round_x16(_mm512_castps_si512(y)));
                break;
        }
    }
}

// One group's pass over chunks [g0, g1) for every tile of the job: decoded once, acc from +0 (first pass) or
// carried, then carried or (last pass) stored with the bias.
template <typename F>
void group(Job &jb, int64_t group, int64_t g0, int64_t g1, const Tables &table, Weights &wt) {
    decode<F>(*jb.job, group * FEATURES, g0, g1, table, wt);
    for (int64_t t = 0; t < jb.tiles; ++t) {
        Vec *acc = &jb.acc[(group * jb.tiles + t) * 16];
        tile_pass(wt, jb.bx.data() + t * jb.chunks * 256, g0, g1, acc);
        if (g1 == jb.chunks) store(*jb.job, group, t, acc);
    }
}

// Runs the jobs' passes of K_BLOCK chunks [p0, p1): per pass, one parallel loop over the units of every job (units
// of G feature groups, the last maybe fewer), each thread with its own scratch (make_scratch()) and tile
// configuration (config()); unit(job, u, p0, p1, scratch) runs unit u of a job. The three orders differ only in
// their units.
template <int G, typename MakeScratch, typename Unit>
void run_passes(std::vector<Job> &jbs, void (*config)(), MakeScratch make_scratch, Unit unit) {
    std::vector<int64_t> first(jbs.size() + 1, 0);
    for (size_t i = 0; i < jbs.size(); ++i) first[i + 1] = first[i] + (jbs[i].groups + G - 1) / G;
    const int64_t chunks = jbs.empty() ? 0 : jbs[0].chunks;
    for (int64_t p0 = 0; p0 < chunks; p0 += K_BLOCK) {
        const int64_t p1 = std::min(chunks, p0 + K_BLOCK);
        at::parallel_for(0, first.back(), 1, [&](int64_t u0, int64_t u1) {
            auto scratch = make_scratch();
            int64_t i = std::upper_bound(first.begin(), first.end(), u0) - first.begin() - 1;
            config();
            for (int64_t u = u0; u < u1; ++u) {
                while (u >= first[i + 1]) ++i;
                unit(jbs[i], u - first[i], p0, p1, scratch);
            }
            _tile_release();
        });
    }
}

// The parts order.

// bfloat16 parts of v = a * q: 2 where v has at most 16 significant bits (an f16 scale times a code of up to 5
// bits), 1 where v is a power of two times a 2-bit integer (MXFP4: E8M0 scale times a doubled E2M1 value) or a
// 4-bit float times one (NVFP4: UE4M3 scale); 3 (every float32) otherwise.
template <typename F>
struct Parts : std::integral_constant<int, 3> {};
template <> struct Parts<Q4_0> : std::integral_constant<int, 2> {};
template <> struct Parts<Q4_1> : std::integral_constant<int, 2> {};
template <> struct Parts<Q5_1> : std::integral_constant<int, 2> {};
template <> struct Parts<Q5_0> : std::integral_constant<int, 2> {};
template <> struct Parts<Q1_0> : std::integral_constant<int, 2> {};
template <> struct Parts<Q2_0> : std::integral_constant<int, 2> {};
template <> struct Parts<MXFP4> : std::integral_constant<int, 1> {};
template <> struct Parts<NVFP4> : std::integral_constant<int, 1> {};

constexpr int PARTS_STEP = 8;  // chunks per step of a pass: two groups' decoded parts (up to 48 KB) stay near L1
constexpr int PARTS_OFFSET_TILES = 2;  // offset products per step (Q4_1, Q5_1: parts_offset_row)

// One step's weights of two groups of 16 features: w[((group * PARTS_STEP + g) * P + p) * 16 + f] = part p of
// chunk g of feature f.
// Offset types (Q4_1, Q5_1): m[group][o] the offsets' A tile o (row f: feature f's entries, parts_offset_row).
struct PartWeights {
    std::vector<Vec> w;
    Vec m[2][2][FEATURES];
    explicit PartWeights(int parts) : w(2 * PARTS_STEP * parts * FEATURES) {}
};

// Offsets of the parts order: per step, entry e = 16 q + 8 p + g of the A tiles (row f) is part p of feature f's
// m_g, of the B tiles (row r) part q of X_g (row r's sum over chunk g; Job::xp), so two TDPBF16PS add every
// product of a part of m_g by a part of X_g (exact products; 48 entries, then zeros). m: the step's offsets
// (0 past its chunks).
inline void parts_offset_row(const float (&m)[PARTS_STEP], Vec (&row)[2]) {
    const __m256 v = _mm256_loadu_ps(m);
    const __m256i top = _mm256_set1_epi32(int(0xFFFF0000u));
    const __m256 hi = _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(v), top));
    const __m256 lo = _mm256_sub_ps(v, hi);  // exact: an f16 value has 11 significant bits
    const __m128i h = _mm256_cvtepi32_epi16(_mm256_srli_epi32(_mm256_castps_si256(hi), 16));
    const __m128i l = _mm256_cvtepi32_epi16(_mm256_srli_epi32(_mm256_castps_si256(lo), 16));
    const __m256i hl = _mm256_inserti128_si256(_mm256_castsi128_si256(h), l, 1);
    _mm512_store_si512(row[0].v, _mm512_inserti64x4(_mm512_castsi256_si512(hl), hl, 1));
    _mm512_store_si512(row[1].v, _mm512_inserti64x4(_mm512_castsi256_si512(hl), _mm256_setzero_si256(), 1));
}

// The P bfloat16 parts of v = a * q (lane i of a scales codes 2i, 2i + 1), high first, P * 16 vectors apart.
template <int P>
__attribute__((always_inline)) inline void split(__m512i q, __m512 a, Vec *parts) {
    const __m512i top = _mm512_set1_epi32(int(0xFFFF0000u));
    __m512 even = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(q, 16)), a);
    __m512 odd = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(q, top)), a);
    for (int p = 0; p < P; ++p) {
        const __m512 he = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(even), top));
        const __m512 ho = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(odd), top));
        _mm512_store_si512(parts[p * FEATURES].v,
                           _mm512_or_si512(_mm512_castps_si512(ho), _mm512_srli_epi32(_mm512_castps_si512(he), 16)));
        even = _mm512_sub_ps(even, he), odd = _mm512_sub_ps(odd, ho);
    }
}

// Decodes chunks [g0, g1) of features n0 .. n0 + 15 into slot h of wt (features past N repeat the last).
template <typename F>
void decode_parts(const MatvecJob &job, int64_t n0, int64_t g0, int64_t g1, const Tables &table, PartWeights &wt,
                  int h) {
    constexpr int P = Parts<F>::value;
    for (int f = 0; f < FEATURES; ++f) {
        const int64_t n = std::min(n0 + f, job.N - 1);
        const typename F::Block *blocks = reinterpret_cast<const typename F::Block *>(job.w + n * job.row_bytes);
        float m[PARTS_STEP] = {};
        for (int64_t i = g0 / F::CH; i * F::CH < g1; ++i) {
            const typename F::Block *b = blocks + i;
            prefetch_ahead(b);
            const typename F::Scales s = F::scales(b, table);
            for (int c = int(std::max<int64_t>(0, g0 - i * F::CH)); c < F::CH && i * F::CH + c < g1; ++c) {
                const int64_t g = h * PARTS_STEP + i * F::CH + c - g0;
                split<P>(chunk_codes<F>(b, c, table, s), F::chunk_scale(s, c), &wt.w[g * P * FEATURES + f]);
                if constexpr (F::OFFSET) m[i * F::CH + c - g0] = table.scales->half[b->m.bits];
            }
        }
        if constexpr (F::OFFSET) {
            Vec row[2];
            parts_offset_row(m, row);
            wt.m[h][0][f] = row[0], wt.m[h][1][f] = row[1];
        }
    }
}

// C tiles 0-3 from +0, from c[0..3] or to c[0..3] (rows 64 bytes apart): the parts and factored orders' 2 x 2
// tiles (tile numbers are immediates, so spelled out once here).
__attribute__((always_inline)) inline void zero_c_tiles() {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
}

template <typename C>
__attribute__((always_inline)) inline void load_c_tiles(const C &c) {
    _tile_loadd(0, c[0], 64);
    _tile_loadd(1, c[1], 64);
    _tile_loadd(2, c[2], 64);
    _tile_loadd(3, c[3], 64);
}

template <typename C>
__attribute__((always_inline)) inline void store_c_tiles(const C &c) {
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
}

// C tiles 0-3 += chunks [0, chunks) of two groups' A parts (w0, w1) by two tiles of x (b0, b1): per chunk in
// increasing order, each part high first, the 2 x 2 products (tiles 4-7 hold the operands). The parts and factored
// orders share it.
template <int P>
__attribute__((always_inline)) inline void tile_products_2x2(const Vec *w0, const Vec *w1, const uint32_t *b0,
                                                             const uint32_t *b1, int64_t chunks) {
#pragma GCC unroll 8
    for (int64_t g = 0; g < chunks; ++g) {
        _tile_loadd(6, b0 + g * 256, 64);
        _tile_loadd(7, b1 + g * 256, 64);
#pragma GCC unroll 3
        for (int p = 0; p < P; ++p) {
            _tile_loadd(4, w0[(g * P + p) * FEATURES].v, 64);
            _tile_loadd(5, w1[(g * P + p) * FEATURES].v, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
}

// C tiles 0-3 += OT offset products of two groups' A tiles (m0, m1) by two tiles of x's sums (B: x0, x1).
template <int OT>
__attribute__((always_inline)) inline void tile_offset_products(const Vec (*m0)[FEATURES], const Vec (*m1)[FEATURES],
                                                                const uint32_t *x0, const uint32_t *x1) {
    for (int k = 0; k < OT; ++k) {
        _tile_loadd(6, x0 + k * 256, 64);
        _tile_loadd(7, x1 + k * 256, 64);
        _tile_loadd(4, m0[k][0].v, 64);
        _tile_loadd(5, m1[k][0].v, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
}

// Chunks [0, chunks) of one step for two groups (A parts w0, w1) by two tiles of x (B: b0, b1), then OT offset
// products (A: m0, m1; B: x0, x1): the four C tiles from +0 (first step) or loaded from c[0..3], and stored back
// there.
template <int P, int OT>
void tiles_2x2(const Vec *w0, const Vec *w1, const uint32_t *b0, const uint32_t *b1, int64_t chunks,
               const Vec (*m0)[FEATURES], const Vec (*m1)[FEATURES], const uint32_t *x0, const uint32_t *x1,
               bool first, float *const c[4]) {
    asm volatile("" : : : "memory");  // the tile loads below read wt and bx (GCC's tileloadd has no memory clobber)
    if (first) {
        zero_c_tiles();
    } else {
        load_c_tiles(c);
    }
    tile_products_2x2<P>(w0, w1, b0, b1, chunks);
    tile_offset_products<OT>(m0, m1, x0, x1);
    store_c_tiles(c);
    asm volatile("" : : : "memory");
}

// One step (chunks [g0, g1)) of groups 2 pair and 2 pair + 1 over every tile of x of the job; the last step stores
// y = C [+ bias].
template <typename F>
void pair_step(Job &jb, int64_t pair, int64_t g0, int64_t g1, const Tables &table, PartWeights &wt) {
    constexpr int P = Parts<F>::value, OT = F::OFFSET ? PARTS_OFFSET_TILES : 0;
    const MatvecJob &job = *jb.job;
    for (int h = 0; h < 2; ++h) decode_parts<F>(job, (2 * pair + h) * FEATURES, g0, g1, table, wt, h);
    const int64_t tiles = (jb.tiles + 1) / 2 * 2, steps = (jb.chunks + PARTS_STEP - 1) / PARTS_STEP;
    const auto acc = [&](int h, int64_t t) { return jb.acc[((2 * pair + h) * tiles + t) * 16].v; };
    const auto x_parts = [&](int64_t t) { return jb.xp.data() + (t * steps + g0 / PARTS_STEP) * OT * 256; };
    for (int64_t t = 0; t < tiles; t += 2) {
        float *const c[4] = {acc(0, t), acc(0, t + 1), acc(1, t), acc(1, t + 1)};
        tiles_2x2<P, OT>(wt.w.data(), &wt.w[PARTS_STEP * P * FEATURES], jb.bx.data() + (t * jb.chunks + g0) * 256,
                         jb.bx.data() + ((t + 1) * jb.chunks + g0) * 256, g1 - g0, wt.m[0], wt.m[1], x_parts(t),
                         x_parts(t + 1), g0 == 0, c);
        if (g1 < jb.chunks) continue;
        for (int h = 0; h < 2; ++h) {
            for (int64_t tt = t; tt < std::min(t + 2, jb.tiles); ++tt) {
                store(job, 2 * pair + h, tt, reinterpret_cast<const Vec *>(acc(h, tt)));
            }
        }
    }
}

// Runs the jobs' passes in the parts order: units are pairs of 16-feature groups, each taking the pass in steps of
// PARTS_STEP chunks.
template <typename F>
void run_parts(std::vector<Job> &jbs, const Tables &table) {
    run_passes<2>(jbs, configure_parts, [] { return PartWeights(Parts<F>::value); },
                  [&](Job &jb, int64_t pair, int64_t p0, int64_t p1, PartWeights &wt) {
                      for (int64_t g0 = p0; g0 < p1; g0 += PARTS_STEP) {
                          pair_step<F>(jb, pair, g0, std::min(p1, g0 + PARTS_STEP), table, wt);
                      }
                  });
}

// The factored order.

// Super-block types whose block scale d factors out: every chunk scale is a = d * s with s a small multiple of
// 1/8 (a 6-bit or 8-bit integer sub-scale, or IQ's (2 ls + 1) / 8, (2 ls + 1) / 4, (2 s + 1) / 8, IQ1's
// (2 s + 1) / 8 with codes 8 grid +- 1), so c = s * q has few significant bits and the A tiles hold c as
// Factored<F> bfloat16 parts (1: |c| an integer <= 256 or such an integer / 8: Q2_K 15 * 3, Q3_K 32 * 4, IQ1_S and
// IQ1_M 15 * 9 / 8, TQ1_0 and TQ2_0 1; 2: at most 16 significant bits: Q4_K 63 * 15, Q5_K 63 * 31, Q6_K 128 * 32,
// IQ4_XS 32 * 127, IQ2 31 * 43 / 8, IQ3_XXS 31 * 62 / 4, IQ3_S 31 * 15).
template <typename F>
struct Factored : std::integral_constant<int, 0> {};
template <> struct Factored<Q2_K> : std::integral_constant<int, 1> {};
template <> struct Factored<Q3_K> : std::integral_constant<int, 1> {};
template <> struct Factored<Q4_K> : std::integral_constant<int, 2> {};
template <> struct Factored<Q5_K> : std::integral_constant<int, 2> {};
template <> struct Factored<Q6_K> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ2_XXS> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ2_XS> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ3_XXS> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ1_S> : std::integral_constant<int, 1> {};
template <> struct Factored<IQ3_S> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ2_S> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ4_XS> : std::integral_constant<int, 2> {};
template <> struct Factored<IQ1_M> : std::integral_constant<int, 1> {};
template <> struct Factored<TQ1_0> : std::integral_constant<int, 1> {};
template <> struct Factored<TQ2_0> : std::integral_constant<int, 1> {};

// The block scale d (as float32, exact) that every chunk scale of the block is a multiple of.
template <typename F>
inline float block_d(const typename F::Block *b, const Tables &t) {
    if constexpr (std::is_same_v<F, IQ1_M>) {
        uint64_t sc;
        std::memcpy(&sc, b->scales, 8);
        return t.scales->half[uint16_t(_pext_u64(sc, 0xF000F000F000F000ull))];
    } else {
        return t.scales->half[b->d.bits];
    }
}

// Offsets per 256-element block: 0, 8 (one per chunk) or 16 (Q2_K: one per 16 elements).
template <typename F>
constexpr int block_offsets() {
    return offset_span<F>() == 0 ? 0 : F::QK / offset_span<F>();
}

// Offsets: b_j = dmin * m_j with m_j a small integer (Q4_K, Q5_K: 6 bits; Q2_K: 4), so a block's offset sum
// sum_j m_j X_j is one more product on the tiles: A holds m_j (exact in bfloat16) at entries p U + j, B the three
// bfloat16 parts p of X_j (X_j = hi + mid + lo exactly: the next 8 significant bits each), OFFSET_TILES tiles of
// 32 entries per block.
template <typename F>
constexpr int offset_tiles() {
    return (3 * block_offsets<F>() + 31) / 32;
}

// One step's weights of two groups of 16 features (one 256-element block: PARTS_STEP chunks): the parts of c as
// PartWeights; per group h, d[h] and dmin[h] lane f = feature f's d and dmin, m[h][o] the offsets' A tile o (row
// f: feature f's 32 bfloat16 entries).
struct FactoredWeights {
    std::vector<Vec> w;
    Vec d[2], dmin[2], m[2][2][FEATURES];
    explicit FactoredWeights(int parts) : w(2 * PARTS_STEP * parts * FEATURES) {}
};

template <typename F>
void decode_factored(const MatvecJob &job, int64_t n0, int64_t i, const Tables &table, FactoredWeights &wt, int h) {
    constexpr int P = Factored<F>::value, U = block_offsets<F>();
    static_assert(F::CH == PARTS_STEP);
    for (int f = 0; f < FEATURES; ++f) {
        const int64_t n = std::min(n0 + f, job.N - 1);
        const typename F::Block *b = reinterpret_cast<const typename F::Block *>(job.w + n * job.row_bytes) + i;
        prefetch_ahead(b);
        const typename F::Scales s = F::scales(b, table);
        const float d = block_d<F>(b, table);
        wt.d[h].v[f] = d;
        if constexpr (U > 0) {
            // m_j = b_j / dmin, exactly (as s below; dmin = 0: every offset is 0).
            const float dmin = table.scales->half[b->dmin.bits];
            wt.dmin[h].v[f] = dmin;
            const __m512 inv_min = _mm512_set1_ps(dmin == 0 ? 0.0f : 1.0f / dmin);
            constexpr int R = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            // Row f of the A tiles: entries p U + j = m_j (bfloat16: the top half of the float32), then zeros.
            if constexpr (U == 8) {
                const __m256 m = _mm256_roundscale_ps(_mm256_mul_ps(s.b, _mm512_castps512_ps256(inv_min)), R);
                const __m128i w = _mm256_cvtepi32_epi16(_mm256_srli_epi32(_mm256_castps_si256(m), 16));
                __m512i row = _mm512_inserti32x4(_mm512_castsi128_si512(w), w, 1);
                row = _mm512_inserti32x4(_mm512_inserti32x4(row, w, 2), _mm_setzero_si128(), 3);
                _mm512_store_si512(wt.m[h][0][f].v, row);
            } else {
                const __m512 m = _mm512_roundscale_ps(_mm512_mul_ps(s.b, inv_min), R);
                const __m256i w = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(m), 16));
                _mm512_store_si512(wt.m[h][0][f].v, _mm512_inserti64x4(_mm512_castsi256_si512(w), w, 1));
                _mm512_store_si512(wt.m[h][1][f].v, _mm512_inserti64x4(_mm512_castsi256_si512(w), _mm256_setzero_si256(), 1));
            }
        }
        // s = a / d, exactly: a * (1 / d) is within 2 ulps of s, a multiple of 1/8, so rounding to 3 fraction
        // bits recovers it (d = 0: every weight of the block is 0, s = 0).
        const __m512 inv = _mm512_set1_ps(d == 0 ? 0.0f : 1.0f / d);
#pragma GCC unroll 8
        for (int c = 0; c < F::CH; ++c) {
            const __m512 sub = _mm512_roundscale_ps(_mm512_mul_ps(F::chunk_scale(s, c), inv),
                                                    (3 << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            split<P>(chunk_codes<F>(b, c, table, s), sub, &wt.w[(h * PARTS_STEP + c) * P * FEATURES + f]);
        }
    }
}

// One block (PARTS_STEP chunks) of two groups (A parts w0, w1) by two tiles of x (B: b0, b1), the four C tiles
// from +0, stored to c[0..3]; then OT offset products (A: m0, m1; B: the X parts x0, x1), from +0, to o[0..3].
template <int P, int OT>
void tiles_block(const Vec *w0, const Vec *w1, const uint32_t *b0, const uint32_t *b1, float (*c)[256],
                 const Vec (*m0)[FEATURES], const Vec (*m1)[FEATURES], const uint32_t *x0, const uint32_t *x1,
                 float (*o)[256]) {
    asm volatile("" : : : "memory");  // the tile loads below read wt and bx (GCC's tileloadd has no memory clobber)
    zero_c_tiles();
    tile_products_2x2<P>(w0, w1, b0, b1, PARTS_STEP);
    store_c_tiles(c);
    if constexpr (OT > 0) {
        zero_c_tiles();
        tile_offset_products<OT>(m0, m1, x0, x1);
        store_c_tiles(o);
    }
    asm volatile("" : : : "memory");
}

// acc[n] (16 rows of x for feature n) = fma(C row n, d_n, acc[n]) (acc from +0 on the first block), then with
// offsets acc[n] = acc[n] - dmin_n O (O row n: the block's offset sum).
template <bool OFS>
__attribute__((always_inline)) inline void drain_block(Vec *acc, const float *c, const Vec &d, const float *o,
                                                       const Vec &dmin, bool first) {
#pragma GCC unroll 16
    for (int n = 0; n < 16; ++n) {
        __m512 a = first ? _mm512_setzero_ps() : _mm512_load_ps(acc[n].v);
        a = _mm512_fmadd_ps(_mm512_load_ps(c + 16 * n), _mm512_set1_ps(d.v[n]), a);
        if constexpr (OFS) a = _mm512_fnmadd_ps(_mm512_load_ps(o + 16 * n), _mm512_set1_ps(dmin.v[n]), a);
        _mm512_store_ps(acc[n].v, a);
    }
}

// Block i (chunks [8 i, 8 i + 8)) of groups 2 pair and 2 pair + 1 over every tile of x of the job; the last block
// stores y = acc [+ bias].
template <typename F>
void pair_block(Job &jb, int64_t pair, int64_t i, const Tables &table, FactoredWeights &wt) {
    constexpr int P = Factored<F>::value, OT = offset_tiles<F>();
    const MatvecJob &job = *jb.job;
    for (int h = 0; h < 2; ++h) decode_factored<F>(job, (2 * pair + h) * FEATURES, i, table, wt, h);
    const int64_t tiles = (jb.tiles + 1) / 2 * 2, g0 = i * PARTS_STEP;
    Vec *const acc = jb.acc.data();
    // Tile pair t's C drains after tile pair t + 2's products are issued (c[t / 2 % 2]): the vector work runs
    // while the tile unit computes.
    alignas(64) float c[2][4][256], o[2][OT > 0 ? 4 : 1][256];
    const auto drain = [&](int64_t t) {
        for (int h = 0; h < 2; ++h) {
            for (int e = 0; e < 2; ++e) {
                drain_block<OT != 0>(&acc[((2 * pair + h) * tiles + t + e) * 16], c[t / 2 % 2][2 * h + e], wt.d[h],
                                     o[t / 2 % 2][OT > 0 ? 2 * h + e : 0], wt.dmin[h], i == 0);
            }
        }
        if ((i + 1) * PARTS_STEP < jb.chunks) return;
        for (int h = 0; h < 2; ++h) {
            for (int64_t tt = t; tt < std::min(t + 2, jb.tiles); ++tt) {
                store(job, 2 * pair + h, tt, &acc[((2 * pair + h) * tiles + tt) * 16]);
            }
        }
    };
    for (int64_t t = 0; t < tiles; t += 2) {
        const auto x_parts = [&](int64_t tt) { return jb.xp.data() + (tt * (jb.chunks / PARTS_STEP) + i) * OT * 256; };
        tiles_block<P, OT>(wt.w.data(), &wt.w[PARTS_STEP * P * FEATURES], jb.bx.data() + (t * jb.chunks + g0) * 256,
                           jb.bx.data() + ((t + 1) * jb.chunks + g0) * 256, c[t / 2 % 2], wt.m[0], wt.m[1],
                           x_parts(t), x_parts(t + 1), o[t / 2 % 2]);
        if (t > 0) drain(t - 2);
    }
    drain(tiles - 2);
}

// Runs the jobs' passes in the factored order: units are pairs of 16-feature groups, each taking the pass one
// 256-element block at a time.
template <typename F>
void run_factored(std::vector<Job> &jbs, const Tables &table) {
    run_passes<2>(jbs, configure_parts, [] { return FactoredWeights(Factored<F>::value); },
                  [&](Job &jb, int64_t pair, int64_t p0, int64_t p1, FactoredWeights &wt) {
                      for (int64_t g0 = p0; g0 < p1; g0 += PARTS_STEP) {
                          pair_block<F>(jb, pair, g0 / PARTS_STEP, table, wt);
                      }
                  });
}

// The scaled order's passes (see matmul_amx): units are single 16-feature groups.
template <typename F>
void run_scaled(std::vector<Job> &jbs, const Tables &table) {
    run_passes<1>(jbs, configure, [] { return Weights(K_BLOCK); },
                  [&](Job &jb, int64_t group_index, int64_t p0, int64_t p1, Weights &wt) {
                      group<F>(jb, group_index, p0, p1, table, wt);
                  });
}

// The types of each order.
using ScaledTypes = Types<Q8_0>;
using PartsTypes = Types<Q4_0, Q4_1, Q5_1, Q5_0, IQ4_NL, MXFP4, NVFP4, Q1_0, Q2_0>;
using FactoredTypes = Types<Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ3_S, IQ2_S, IQ4_XS, IQ1_M,
                           TQ1_0, TQ2_0>;

using RunFn = void (*)(std::vector<Job> &, const Tables &);

// The kernel of a type's order, its tables, and which sums of x it takes for offsets (Sums::chunks: the parts
// order's; otherwise the factored order's, for types with offsets).
inline bool amx_kernel(int64_t qtype, RunFn *fn, Tables *table, Sums *sums = nullptr) {
    return with_type(qtype, ScaledTypes{}, [&]<typename T>(std::type_identity<T>) {
               if (fn) *fn = run_scaled<T>, *table = T::tables();
           }) ||
           with_type(qtype, PartsTypes{}, [&]<typename T>(std::type_identity<T>) {
               if (fn) *fn = run_parts<T>, *table = T::tables(), *sums = Sums::chunks;
           }) ||
           with_type(qtype, FactoredTypes{}, [&]<typename T>(std::type_identity<T>) {
               if (fn) *fn = run_factored<T>, *table = T::tables();
           });
}

}  // namespace amx

bool amx_supports(int64_t qtype) { return amx::amx_kernel(qtype, nullptr, nullptr); }

namespace amx {

// x of one job as B tiles (and chunk sums), see Job.
inline void prepare(Job &jb, Sums sums) {
    const MatvecJob &job = *jb.job;
    jb.tiles = (job.M + 15) / 16;
    jb.chunks = job.K / 32;
    jb.groups = (job.N + FEATURES - 1) / FEATURES;
    const int64_t tiles = (jb.tiles + 1) / 2 * 2, groups = (jb.groups + 1) / 2 * 2;
    jb.bx.assign(size_t(tiles * jb.chunks * 256), 0);
    // Types with offsets: 3 parts each of U sums of x per unit (xp): the parts order's steps of PARTS_STEP chunks
    // (U = 16: each chunk's sum for both parts of m_g, zero past the last chunk), or the factored order's blocks
    // (U = 256 / span).
    const bool chunk_sums = job.sum_rows && sums == Sums::chunks;
    const int64_t units = chunk_sums ? (jb.chunks + PARTS_STEP - 1) / PARTS_STEP : job.K / 256;
    const int64_t U = !job.sum_rows ? 0 : chunk_sums ? 2 * PARTS_STEP : 256 / offset_span(job.qtype);
    const int64_t OT = (3 * U + 31) / 32;
    jb.xp.assign(size_t(tiles * units * OT * 256), 0);
    at::parallel_for(0, jb.tiles, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            for (int64_t m = 16 * t; m < std::min(job.M, 16 * t + 16); ++m) {
                const uint32_t *src = static_cast<const uint32_t *>(job.x_rows[m]);
                uint32_t *dst = jb.bx.data() + t * jb.chunks * 256 + m % 16;
                for (int64_t p = 0; p < jb.chunks * 16; ++p) dst[16 * p] = src[p];
                uint16_t *xp = reinterpret_cast<uint16_t *>(jb.xp.data());
                for (int64_t i = 0; i < units && U > 0; ++i) {
                    for (int64_t j = 0; j < U; ++j) {
                        const int64_t g = i * PARTS_STEP + j % PARTS_STEP;  // chunk_sums: entry j's chunk
                        if (chunk_sums && g >= jb.chunks) continue;
                        float rest = job.sum_rows[m][chunk_sums ? g : i * U + j];
                        for (int64_t p = 0; p < 3; ++p) {  // the next 8 significant bits: the parts sum to X
                            const uint32_t part = as_type<uint32_t>(rest) & 0xFFFF0000u;
                            rest = rest - as_type<float>(part);
                            const int64_t e = p * U + j;
                            xp[2 * ((((t * units + i) * OT + e / 32) * 16 + e % 32 / 2) * 16 + m % 16) + e % 2] =
                                uint16_t(part >> 16);
                        }
                    }
                }
            }
        }
    });
    jb.acc.resize(size_t(groups * tiles * 16));
}

}  // namespace amx

// Runs every job (bfloat16 x, one K, one type) on AMX in its type's order: passes of K_BLOCK chunks, each one
// parallel loop over the feature groups of all jobs.
void matmul_amx(const MatvecJob *jobs, int64_t n_jobs) {
    using namespace amx;
    if (n_jobs == 0) return;
    RunFn fn;
    Tables table;
    Sums sums = Sums::blocks;
    amx_kernel(jobs[0].qtype, &fn, &table, &sums);
    std::vector<Job> jbs(n_jobs);
    for (int64_t i = 0; i < n_jobs; ++i) {
        jbs[i].job = &jobs[i];
        prepare(jbs[i], sums);
    }
    fn(jbs, table);
}

}  // namespace gguf_mv_avx512bf16
