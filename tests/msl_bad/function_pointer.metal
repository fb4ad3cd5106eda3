// expect: function-pointer
#include <metal_stdlib>
using namespace metal;

float twice(float v) { return 2 * v; }

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) {
    float (*f)(float) = twice;
    dst[tid] = f(src[tid]);
}
