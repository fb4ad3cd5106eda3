// The mat-vec tier on AMX (M <= 8 rows of bfloat16 x) for the types of AmxMatvecTypes: the AMX parts
// order of amx_kernels.h (same bits: C = +0, then C = TDPBF16PS(C, part p of chunk g, x of chunk g) for chunk g
// = 0, 1, ... and part p high first; y = C [+ bias]), with a traversal for few rows: one B tile per chunk holds
// every row of x (8 columns), the C tiles of a work item's feature groups stay in their registers across all of K,
// and the weights are decoded once into A tiles. One TDPBF16PS multiplies 16 features x 32 weights by all 8 rows,
// so M = 8 costs what M = 1 does. Included once, after amx_kernels.h, by matvec_avx512bf16.cpp.

namespace gguf_mv_avx512bf16 {

namespace amx_mv {

using amx::FEATURES;
using amx::Parts;
using amx::TileConfig;
using amx::Vec;

constexpr int GROUPS = 2;    // feature groups (C tiles) per work item
constexpr int ROWS = 8;      // columns of the B and C tiles: rows of x
constexpr int STEP = 2;      // chunks per step: the decoded parts (2 buffers of GROUPS * STEP * P KB) stay in L1

// Tiles 0, 1: C (16 features x 8 rows) of groups 0, 1; 4, 5: A (16 features x 16 pairs) of groups 0, 1; 6, 7: B
// (16 pairs x 8 rows), by chunk parity.
inline void configure() {
    TileConfig cfg{};
    cfg.palette = 1;
    for (int i = 0; i < GROUPS; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 4 * ROWS;
    for (int i = 4; i < 6; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 64;
    for (int i = 6; i < 8; ++i) cfg.rows[i] = 16, cfg.colsb[i] = 4 * ROWS;
    amx::load_tile_config(cfg);
}

// x as B tiles: word bx[(g * 16 + k) * ROWS + m] = elements 32g + 2k, 32g + 2k + 1 of row m (zero for m >= M).
inline std::vector<uint32_t> pack_x(const MatvecJob &job) {
    const int64_t chunks = job.K / 32;
    std::vector<uint32_t> bx(size_t(chunks * 16 * ROWS), 0);
    for (int64_t m = 0; m < job.M; ++m) {
        const uint32_t *src = static_cast<const uint32_t *>(job.x_rows[m]);
        for (int64_t p = 0; p < chunks * 16; ++p) bx[p * ROWS + m] = src[p];
    }
    return bx;
}

// MXFP4's one bfloat16 part without float32 arithmetic: the code's bfloat16 word (kvalues_fp4, exact) with e - 128
// added to its exponent field, the product with a = 2^(e - 128) exactly when both it and the code are normal
// (e in [2, 252]; zero codes stay zero); other scales take amx::split's float32 product (the same word).
struct MXFP4Words {
    __m512i codes;          // kvalues_fp4 as bfloat16, twice (vpermw reads 5 bits of each index word)
    uint32_t delta[256];    // (e - 128) << 7 in both halves
    MXFP4Words() {
        int v[32];
        for (int k = 0; k < 32; ++k) v[k] = kvalues_fp4[k % 16];
        codes = bf16_table(v, 32);
        for (int e = 0; e < 256; ++e) delta[e] = uint16_t((e - 128) << 7) * 0x10001u;
    }
};

inline const MXFP4Words &mxfp4_words() {
    static const MXFP4Words t;
    return t;
}

template <typename F>
__attribute__((always_inline)) inline void decode_chunk(const typename F::Block *b, int c, const Tables &table,
                                                        const typename F::Scales &s, const MXFP4Words &t,
                                                        Vec *parts) {
    if constexpr (std::is_same_v<F, MXFP4>) {
        if (b->e >= 2 && b->e <= 252) {
            const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs)));
            // Byte j % 16 into word j, shifted right by 4 for j >= 16: the nibble of element j in bits 0-3.
            const __m512i at = _mm512_set_epi64(0x0F0F0E0E0D0D0C0Cll, 0x0B0B0A0A09090808ll, 0x0707060605050404ll,
                                                0x0303020201010000ll, 0x0F0F0E0E0D0D0C0Cll, 0x0B0B0A0A09090808ll,
                                                0x0707060605050404ll, 0x0303020201010000ll);
            constexpr long long S = 0x0004000400040004ll;
            const __m512i shift = _mm512_set_epi64(S, S, S, S, 0, 0, 0, 0);
            // The block's table: every nonzero entry (all but kvalues_fp4[0] and [8]) scaled.
            const __m512i scaled = _mm512_mask_add_epi16(t.codes, 0xFEFEFEFEu, t.codes, _mm512_set1_epi32(int(t.delta[b->e])));
            _mm512_store_si512(parts->v, _mm512_permutexvar_epi16(
                                             _mm512_srlv_epi16(_mm512_permutexvar_epi8(at, q), shift), scaled));
            return;
        }
    }
    amx::split<Parts<F>::value>(chunk_codes<F>(b, c, table, s), F::chunk_scale(s, c), parts);
}

// Chunks [g0, g1) of features n0 .. n0 + 15 as P bfloat16 parts each (features past N repeat the last):
// wt[((g - g0) * P + p) * 16 + f] = part p of chunk g of feature f.
template <typename F>
inline void decode_step(const MatvecJob &job, int64_t n0, int64_t g0, int64_t g1, const Tables &table,
                        const MXFP4Words &mw, Vec *wt) {
    constexpr int P = Parts<F>::value;
    using Block = typename F::Block;
    for (int f = 0; f < FEATURES; ++f) {
        const int64_t n = std::min(n0 + f, job.N - 1);
        const Block *blocks = reinterpret_cast<const Block *>(job.w + n * job.row_bytes);
#pragma GCC unroll 8
        for (int64_t i = g0 / F::CH; i * F::CH < g1; ++i) {
            const Block *b = blocks + i;
            const typename F::Scales s = F::scales(b, table);
#pragma GCC unroll 8
            for (int c = 0; c < F::CH; ++c) {
                const int64_t g = i * F::CH + c;
                if (g < g0 || g >= g1) continue;
                decode_chunk<F>(b, c, table, s, mw, &wt[(g - g0) * P * FEATURES + f]);
            }
        }
    }
}

// Features [n0, n0 + 16 * groups) of every row: C tiles from +0, then for each step: decode, then per chunk one B
// load and, per group and part, one A load and one TDPBF16PS; y = C [+ bias].
// Weights [next, end) (the next work item's rows: contiguous) are prefetched into L2 a slice per step, in
// order: the rows of a work item are read a step at a time, too short a run per row for the hardware
// prefetchers, which alone leave one core at about half its streaming bandwidth.
template <typename F, int G>
void work_item(const MatvecJob &job, const uint32_t *bx, int64_t n0, const Tables &table, const MXFP4Words &mw,
               Vec *wt, const char *next, const char *end) {
    constexpr int P = Parts<F>::value;
    const int64_t chunks = job.K / 32, steps = (chunks + STEP - 1) / STEP;
    const int64_t slice = ((end - next) / steps + 63) / 64 * 64;
    static_assert(G >= 1 && G <= GROUPS && GROUPS == 2);
    _tile_zero(0);
    if constexpr (G > 1) _tile_zero(1);
    constexpr int64_t BUFFER = GROUPS * STEP * P * FEATURES;  // one step's parts; two buffers, by step parity
    const auto decode = [&](int64_t s) {
        const int64_t g0 = s * STEP, g1 = std::min(chunks, g0 + STEP);
        for (const char *p = next + s * slice; p < std::min(end, next + (s + 1) * slice); p += 64) {
            _mm_prefetch(p, _MM_HINT_T1);
        }
        Vec *buf = wt + s % 2 * BUFFER;
        for (int j = 0; j < G; ++j) decode_step<F>(job, n0 + j * FEATURES, g0, g1, table, mw, buf + j * STEP * P * FEATURES);
    };
    const auto tiles = [&](int64_t s) __attribute__((always_inline)) {
        asm volatile("" : : : "memory");  // the tile loads read wt (GCC's tileloadd has no memory clobber)
        const int64_t g0 = s * STEP, g1 = std::min(chunks, g0 + STEP);
        const Vec *buf = wt + s % 2 * BUFFER;
        for (int64_t g = g0; g < g1; ++g) {
            const Vec *a = buf + (g - g0) * P * FEATURES;
            const uint32_t *b = bx + g * 16 * ROWS;
            // Tile numbers are immediates: the groups and parities are spelled out.
            if (g % 2 == 0) _tile_loadd(6, b, 4 * ROWS); else _tile_loadd(7, b, 4 * ROWS);
#pragma GCC unroll 3
            for (int p = 0; p < P; ++p) {
#define GGUF_AMX_MV_GROUP(J)                                                                   \
    if constexpr (G > J) {                                                                     \
        const Vec *aj = a + J * STEP * P * FEATURES + p * FEATURES;                            \
        if (J % 2 == 0) _tile_loadd(4, aj[0].v, 64); else _tile_loadd(5, aj[0].v, 64);         \
        if (J % 2 == 0 && g % 2 == 0) _tile_dpbf16ps(J, 4, 6);                                 \
        if (J % 2 == 0 && g % 2 == 1) _tile_dpbf16ps(J, 4, 7);                                 \
        if (J % 2 == 1 && g % 2 == 0) _tile_dpbf16ps(J, 5, 6);                                 \
        if (J % 2 == 1 && g % 2 == 1) _tile_dpbf16ps(J, 5, 7);                                 \
    }
                GGUF_AMX_MV_GROUP(0)
                GGUF_AMX_MV_GROUP(1)
#undef GGUF_AMX_MV_GROUP
            }
        }
        asm volatile("" : : : "memory");
    };
    // Two buffers: step s + 1 is decoded while step s's tile operations run.
    decode(0);
    for (int64_t s = 0; s < steps; ++s) {
        tiles(s);
        if (s + 1 < steps) decode(s + 1);
    }
    alignas(64) float c[GROUPS][16 * ROWS];
    _tile_stored(0, c[0], 4 * ROWS);
    if constexpr (G > 1) _tile_stored(1, c[1], 4 * ROWS);
    asm volatile("" : : : "memory");
    for (int j = 0; j < G; ++j) {
        const int64_t nj = n0 + j * FEATURES;
        for (int f = 0; f < FEATURES && nj + f < job.N; ++f) {
            for (int64_t m = 0; m < job.M; ++m) {
                float y = c[j][f * ROWS + m];
                if (job.bias) y = y + job.bias[nj + f];
                store_output(job.out_rows[m], nj + f, y, job.out_kind);
            }
        }
    }
}

template <typename F>
void run(const MatvecJob &job, const Tables &table) {
    const MXFP4Words &mw = mxfp4_words();
    constexpr int P = Parts<F>::value;
    const std::vector<uint32_t> bx = pack_x(job);
    const int64_t groups = (job.N + FEATURES - 1) / FEATURES;
    const int64_t items = (groups + GROUPS - 1) / GROUPS;
    at::parallel_for(0, items, 1, [&](int64_t u0, int64_t u1) {
        std::vector<Vec> wt(size_t(2 * GROUPS * STEP * P * FEATURES));
        configure();
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n0 = u * GROUPS * FEATURES;
            const char *next = reinterpret_cast<const char *>(job.w) + std::min(job.N, n0 + GROUPS * FEATURES) * job.row_bytes;
            const char *end = reinterpret_cast<const char *>(job.w) + std::min(job.N, n0 + 2 * GROUPS * FEATURES) * job.row_bytes;
            if (groups - u * GROUPS >= 2) {
                work_item<F, 2>(job, bx.data(), n0, table, mw, wt.data(), next, end);
            } else {
                work_item<F, 1>(job, bx.data(), n0, table, mw, wt.data(), next, end);
            }
        }
        _tile_release();
    });
}

// The types whose mat-vec tier runs on AMX where the CPU has it: a subset of amx::PartsTypes, where M = 8 ran about
// 2x faster than the float32 FMA order and M = 1 within about 20% of it (benchmarks/AMX_MATVEC.md).
using AmxMatvecTypes = Types<MXFP4>;

using RunFn = void (*)(const MatvecJob &, const Tables &);

inline bool kernel(int64_t qtype, RunFn *fn, Tables *table) {
    return with_type(qtype, AmxMatvecTypes{}, [&]<typename T>(std::type_identity<T>) {
        if (fn) *fn = run<T>, *table = T::tables();
    });
}

}  // namespace amx_mv

bool amx_matvec_supports(int64_t qtype) { return amx_mv::kernel(qtype, nullptr, nullptr); }

// Runs every job (M <= 8 rows of bfloat16 x, K > 0) in the AMX parts order, one after another.
void matvec_amx(const MatvecJob *jobs, int64_t n_jobs) {
    for (int64_t i = 0; i < n_jobs; ++i) {
        amx_mv::RunFn fn;
        Tables table;
        amx_mv::kernel(jobs[i].qtype, &fn, &table);
        fn(jobs[i], table);
    }
}

}  // namespace gguf_mv_avx512bf16
