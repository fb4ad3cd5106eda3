// Seeded bug: a barrier inside a branch that only some threads of the group take.
// expect: threads 32-63 returned while threads 0-31 wait at threadgroup_barrier
// launch: {"groups": 2, "group": 64}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]],
                uint gid [[thread_position_in_grid]]) {
    threadgroup float tile[64];
    tile[tid] = float(tid);
    if (tid < 32) {
        threadgroup_barrier(mem_flags::mem_threadgroup);  // BUG: not reached by threads 32-63
        out[gid] = tile[63 - tid];
    }
}
