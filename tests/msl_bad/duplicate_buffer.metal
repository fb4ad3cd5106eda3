// expect: duplicate-buffer
#include <metal_stdlib>
using namespace metal;

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(0)]], uint tid [[thread_position_in_grid]]) {
    dst[tid] = src[tid];
}
