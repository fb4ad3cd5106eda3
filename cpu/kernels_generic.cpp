// Every kernel for the baseline instruction set of the target.
#define GGUF_CPU_NS gguf_generic
#include "cpu_kernels.h"
