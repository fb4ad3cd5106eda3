// expect: threadgroup-init
#include <metal_stdlib>
using namespace metal;

kernel void k(device float *dst [[buffer(0)]], uint tid [[thread_position_in_grid]]) {
    threadgroup float total = 0.0f;  // Metal: threadgroup variables cannot be initialised
    if (tid == 0) {
        total = 1.0f;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    dst[tid] = total;
}
