// expect: vector-cast
#include <metal_stdlib>
using namespace metal;

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]], uint tid [[thread_position_in_grid]]) {
    float4 v = float4(src[tid]);
    int4 i = (int4)v;
    dst[tid] = float(i.x);
}
