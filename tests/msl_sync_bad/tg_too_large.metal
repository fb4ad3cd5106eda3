// Seeded bug: more threadgroup memory than Metal's 32 KiB.
// expect: threadgroup memory 'extra' \(4096 bytes\) at \S+ brings the total to 36864 bytes, over Metal's limit of 32768
// launch: {"groups": 1, "group": 64}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float rows[64][64];
    rows[tid][0] = float(tid);
    threadgroup float partial[4096];
    threadgroup float extra[1024];  // BUG: 16 + 16 + 4 KiB > 32 KiB
    partial[tid] = rows[tid][0];
    extra[tid] = partial[tid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = extra[63 - tid];
}
