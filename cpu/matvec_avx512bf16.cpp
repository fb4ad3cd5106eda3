// The mat-vec tier (cpu/matvec_kernels.h) for x86-64 CPUs with AVX-512 (F, BW, DQ, VL) and AVX512-BF16,
// chosen at run time by matmul_cpu.cpp.
#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,avx512vbmi"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,avx512vbmi")
#endif
#define GGUF_CPU_AVX512 1
#include "matvec_kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
