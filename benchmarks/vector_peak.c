// Throughput of the two vector instructions a mat-vec tier could multiply with on an AVX512-BF16 CPU: 512-bit
// float32 FMA (16 products) and VDPBF16PS (32 bfloat16 products). 12 independent accumulator chains each, so
// latency does not limit; cycles are TSC cycles (the TSC runs at the nominal clock).
//
//     cc -O2 -march=sapphirerapids benchmarks/vector_peak.c -o /tmp/vector_peak
//     taskset -c 1 /tmp/vector_peak fma; taskset -c 1 /tmp/vector_peak dot
//     taskset -c 0 /tmp/vector_peak fma & taskset -c 1 /tmp/vector_peak fma; wait   # both logical CPUs at once
//
// Results and what they mean for M = 8: benchmarks/AMX_MATVEC.md, "The vector units' peak".
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <x86intrin.h>

#define STEPS 1000000000L
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
// Keeps every chain in its register and live (the compiler may otherwise merge or drop chains).
#define KEEP                                                                                              \
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));                \
    __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11))

int main(int argc, char **argv) {
    const int dot = argc > 1 && strcmp(argv[1], "dot") == 0;
    const __m512 one = _mm512_set1_ps(1.0f), tiny = _mm512_set1_ps(1e-9f);
    const __m512bh one_bf16 = (__m512bh)_mm512_set1_epi16(0x3f80), small_bf16 = (__m512bh)_mm512_set1_epi16(0x3000);
#define START(i) __m512 a##i = _mm512_set1_ps((float)i);
    CHAINS(START)
    const unsigned long long t0 = __rdtsc();
    if (dot) {
        for (long s = 0; s < STEPS; ++s) {
#define DOT(i) a##i = _mm512_dpbf16_ps(a##i, one_bf16, small_bf16);
            CHAINS(DOT)
            KEEP;
        }
    } else {
        for (long s = 0; s < STEPS; ++s) {
#define FMA(i) a##i = _mm512_fmadd_ps(a##i, one, tiny);
            CHAINS(FMA)
            KEEP;
        }
    }
    const unsigned long long t1 = __rdtsc();
    float sum = 0.0f;
#define SUM(i) sum += _mm512_reduce_add_ps(a##i);
    CHAINS(SUM)
    const double cycles = (double)(t1 - t0) / (STEPS * 12.0);
    printf("%s zmm: %.3f TSC cycles per instruction, %.1f products per TSC cycle  [%g]\n",
           dot ? "vdpbf16ps" : "vfmadd231ps", cycles, (dot ? 32 : 16) / cycles, sum);
    return 0;
}
