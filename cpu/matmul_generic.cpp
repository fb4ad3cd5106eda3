// The fused matmul kernels for the baseline instruction set of the target (NEON on ARM64).
#define GGUF_MM_ISA 0
#define GGUF_MM_NS gguf_mm_generic
#include "matmul_kernels.h"
