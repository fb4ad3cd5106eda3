// Seeded bug: simd_sum under divergent lanes (half of the simdgroup skips it and goes on to the barrier).
// expect: threads wait at different synchronisation points: threads 0-15, 32-47 at simd_sum
// launch: {"groups": 1, "group": 64}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]],
                uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]]) {
    threadgroup float partial[2];
    float s = float(tid);
    if (lane < 16) {
        s = simd_sum(s);  // BUG: lanes 16-31 are live but not here
    }
    if (lane == 0) {
        partial[sg] = s;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = partial[0] + partial[1];
}
