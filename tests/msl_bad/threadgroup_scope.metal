// expect: threadgroup-scope
#include <metal_stdlib>
using namespace metal;

static float stage(float x, uint tid) {
    threadgroup float shared[64];  // Metal: threadgroup variables only at kernel scope
    shared[tid] = x;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return shared[63 - tid];
}

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]],
              uint tid [[thread_position_in_grid]]) {
    dst[tid] = stage(src[tid], tid);
}
