// expect: compile-warning
#include <metal_stdlib>
using namespace metal;

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) { dst[tid] = src[tid] * 0.1; }
