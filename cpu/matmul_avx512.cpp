// The fused matmul kernels for x86-64 CPUs with AVX-512 (F, BW, DQ, VL), FMA and F16C (chosen at run time).
#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#endif
#define GGUF_CPU_AVX512F 1  // the decode helpers 16 wide, as the microkernel
#define GGUF_MM_ISA 2
#define GGUF_MM_NS gguf_mm_avx512
#include "matmul_kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
