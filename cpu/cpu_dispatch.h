// The CPU kernels, built once per instruction set; dequantize_cpu.cpp picks one at run time.
#pragma once

#include <cstdint>

enum class OutKind { f32, f16, bf16 };

// Decodes n_elements elements of type qtype from src into dst; false for an unknown type id.
namespace gguf_generic {
bool dequantize(int64_t qtype, OutKind kind, const void *src, void *dst, int64_t n_elements);
}
#if defined(__x86_64__)
namespace gguf_avx2 {  // AVX2 + F16C: hardware float16 conversion and wider vectors
bool dequantize(int64_t qtype, OutKind kind, const void *src, void *dst, int64_t n_elements);
}
namespace gguf_avx512 {  // AVX-512 F/BW/VL/DQ + AVX512-BF16: 16-wide vectors, hardware bfloat16 rounding
bool dequantize(int64_t qtype, OutKind kind, const void *src, void *dst, int64_t n_elements);
}
#endif
