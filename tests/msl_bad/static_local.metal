// expect: static-local
#include <metal_stdlib>
using namespace metal;

inline float scale() {
    static float s = 2.0f;
    return s;
}
kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) { dst[tid] = src[tid] * scale(); }
