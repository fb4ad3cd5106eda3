// Every kernel again for x86-64 CPUs with AVX-512 (F, BW, VL, DQ) and AVX512-BF16 (chosen at run time by
// dequantize_cpu.cpp): 16 floats per vector and one-instruction float16/bfloat16 stores. GCC's generic tuning
// prefers 256-bit vectors; the decode loops are short and regular, so 512 bits measured faster. No FMA (see
// kernels_avx2.cpp).
#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,f16c,bmi,bmi2"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,f16c,bmi,bmi2", "prefer-vector-width=512")
#endif
#define GGUF_CPU_AVX512 1
#define GGUF_CPU_NS gguf_avx512
#include "cpu_kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
