// expect: threadgroup-size
#include <metal_stdlib>
using namespace metal;

kernel void k(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]],
              constant uint &n [[buffer(2)]], uint tid [[thread_position_in_grid]]) {
    threadgroup float shared[n];  // Metal: the size must be a compile-time constant
    shared[tid] = src[tid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    dst[tid] = shared[n - 1 - tid];
}
