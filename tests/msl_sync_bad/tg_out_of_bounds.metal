// Seeded bug: an off-by-one threadgroup index.
// expect: thread 63 writes 4 bytes at byte offset 256 of threadgroup memory 'tile' \(256 bytes
// launch: {"groups": 1, "group": 64}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float tile[64];
    tile[tid + 1] = float(tid);  // BUG: tid + 1 == 64 for the last thread
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = tile[tid];
}
