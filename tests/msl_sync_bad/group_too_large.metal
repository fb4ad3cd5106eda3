// Seeded bug: a launch with a bigger threadgroup than the pipeline's maximum (as real pipelines report).
// expect: a threadgroup of 64x1x1 = 64 threads exceeds the pipeline maximum of 32 threads
// launch: {"groups": 1, "group": 64, "max_threads_per_group": 32}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {  // BUG
    threadgroup float tile[64];
    tile[tid] = float(tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = tile[63 - tid];
}
