// Seeded bug: the two halves of the group wait at different barriers.
// expect: threads wait at different synchronisation points: threads 0-31 at threadgroup_barrier
// launch: {"groups": 1, "group": 64}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float tile[64];
    tile[tid] = float(tid);
    if (tid < 32) {
        threadgroup_barrier(mem_flags::mem_threadgroup);  // BUG: the other half waits at the barrier below
    } else {
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    out[tid] = tile[63 - tid];
}
