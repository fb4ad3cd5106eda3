// The fused matmul kernels for x86-64 CPUs with AVX2, FMA and F16C (chosen at run time by matmul_cpu.cpp).
#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
#define GGUF_CPU_F16C 1
#define GGUF_MM_ISA 1
#define GGUF_MM_NS gguf_mm_avx2
#include "matmul_kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
