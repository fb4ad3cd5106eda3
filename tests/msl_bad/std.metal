// expect: std
#include <metal_stdlib>
using namespace metal;

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) {
    dst[tid] = std::max(src[tid], 0.0f);
}
