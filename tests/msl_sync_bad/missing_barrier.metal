// Seeded bug: each thread writes its slot and reads its neighbour's with no barrier in between.
// expect: data race on threadgroup memory .tile.
// launch: {"groups": 1, "group": 64}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]],
                uint n [[threads_per_threadgroup]]) {
    threadgroup float tile[64];
    tile[tid] = float(tid);
    out[tid] = tile[(tid + 1) % n];  // BUG: needs threadgroup_barrier(mem_flags::mem_threadgroup) before
}
