// Flush-to-zero probes for msl_harness.compile(..., ftz=True) (tests/test_msl.py).
#include <metal_stdlib>
using namespace metal;

static float scaled(float x, float s) { return x * s; }

// a * b at run time: a subnormal product is flushed (FTZ), a subnormal operand reads as 0 (DAZ).
kernel void ftz_multiply(device const float *a [[buffer(0)]], device const float *b [[buffer(1)]],
                         device float *out [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    out[i] = a[i] * b[i];
}

// The same products folded by the optimizer (inlined constants): flushed by the compile flag itself.
kernel void ftz_folded(device float *out [[buffer(0)]], uint i [[thread_position_in_grid]]) {
    out[0] = scaled(0x1p-100f, 0x1p-30f);
    out[1] = scaled(-0x1p-100f, 0x1p-30f);
    out[2] = scaled(0x1p-140f, 0x1p100f);
}
