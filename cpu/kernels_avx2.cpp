// Every kernel again for x86-64 CPUs with AVX2 and F16C (chosen at run time by dequantize_cpu.cpp).
// No FMA: contraction could not change results (every product is exact), but the baseline build
// has none either, so both builds run the same operations.
#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,f16c")
#endif
#define GGUF_CPU_F16C 1
#define GGUF_CPU_NS gguf_avx2
#include "cpu_kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
