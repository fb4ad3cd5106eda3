// The mat-vec tier (cpu/matvec_kernels.h) for x86-64 CPUs with AVX-512 (F, BW, DQ, VL, VBMI), AVX512-BF16 and BMI2, and the
// AMX tier (cpu/amx_kernels.h) and AMX mat-vec tier (cpu/amx_matvec.h) for those with AMX-TILE and AMX-BF16 too, chosen at run time by matmul_cpu.cpp
// (the compiler emits AMX instructions only for the tile intrinsics, which only the AMX tier calls).
#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,avx512vbmi,amx-tile,amx-bf16"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,avx512vbmi,amx-tile,amx-bf16")
#endif
#define GGUF_CPU_AVX512 1
#include "matvec_kernels.h"
#include "amx_kernels.h"
#include "amx_matvec.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
