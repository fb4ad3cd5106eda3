// expect: compile
#include <metal_stdlib>
using namespace metal;

inline float first(thread const float *p) { return p[0]; }
kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) { dst[tid] = first(src + tid); }
