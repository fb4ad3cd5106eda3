// The fused matmul kernels (y = x @ W^T on packed GGUF weights), built once per instruction set
// (cpu/matmul_kernels.h); cpu/matmul_cpu.cpp picks one at run time.
#pragma once

#include <cstdint>

#include "cpu_dispatch.h"  // OutKind

// out_rows[m][n] = sum_k W[n, k] * x_rows[m][k] (+ bias[n]) for m < M, n < N, in the one summation order
// of every CPU kernel (README, "Compute on packed weights"): 16 lanes, element k into lane k mod 16 by
// a fused multiply-add in increasing k, then the lanes summed pairwise (i + 8, i + 4, i + 2, i + 1).
struct MatmulJob {
    int64_t qtype;
    const uint8_t *w;             // N rows of row_bytes bytes (GGUF blocks)
    int64_t N, K, row_bytes;
    const float *const *x_rows;   // M rows: K float32 values, then zeros up to the next multiple of 16
    int64_t M;
    const float *bias;            // N float32 values, or nullptr
    void *const *out_rows;        // M rows of N values of out_kind
    OutKind out_kind;
};

// Runs every job (one parallel loop over the output features of all of them); false for an unknown type.
namespace gguf_mm_generic {
bool matmul(const MatmulJob *jobs, int64_t n_jobs);
}
#if defined(__x86_64__)
namespace gguf_mm_avx2 {  // AVX2 + FMA + F16C
bool matmul(const MatmulJob *jobs, int64_t n_jobs);
}
namespace gguf_mm_avx512 {  // AVX-512 F/BW/DQ/VL + FMA + F16C
bool matmul(const MatmulJob *jobs, int64_t n_jobs);
}
#endif

// The mat-vec tier (cpu/matvec_kernels.h; its order is stated there and in the README): every row of x
// alone, for M <= 8 (linear) and every mul_mat_id slot, on the types with a factored kernel.
struct MatvecJob {
    int64_t qtype;
    const uint8_t *w;             // N rows of row_bytes bytes (GGUF blocks); K a multiple of 32
    int64_t N, K, row_bytes;
    const void *const *x_rows;    // M rows: K float32 values with each chunk of 32 stored as its 16 even-index
                                  // then 16 odd-index values (the mat-vec tier), or K bfloat16 values (the AMX
                                  // tier)
    const float *const *sum_rows; // M rows of K / offset_span sums of x (types with offsets), else nullptr
    int64_t M;
    const float *bias;            // N float32 values, or nullptr
    void *const *out_rows;        // M rows of N values of out_kind
    OutKind out_kind;
};

#if defined(__x86_64__)
namespace gguf_mv_avx512bf16 {  // AVX-512 F/BW/DQ/VL + AVX512-BF16
bool supports(int64_t qtype);   // a factored kernel exists for this type
bool offsets(int64_t qtype);    // its form has offsets (needs sum_rows)
int offset_span(int64_t qtype); // elements per offset and per sum of x: 32, 16 (Q2_K), or 0 without offsets
void matvec(const MatvecJob *jobs, int64_t n_jobs);
// The AMX tier (cpu/amx_kernels.h): bfloat16 x, any M, jobs of one K, types amx_supports(); the caller has checked
// amx_ready().
bool amx_supports(int64_t qtype);
void matmul_amx(const MatvecJob *jobs, int64_t n_jobs);
// The mat-vec tier on AMX (cpu/amx_matvec.h: the AMX tier's order for M <= 8 rows of bfloat16 x, K > 0) on the
// types amx_matvec_supports(); the caller has checked amx_ready().
bool amx_matvec_supports(int64_t qtype);
void matvec_amx(const MatvecJob *jobs, int64_t n_jobs);
}
#endif
