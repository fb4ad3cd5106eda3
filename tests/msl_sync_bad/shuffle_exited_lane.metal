// Seeded bug: a shuffle that reads a lane which has already returned.
// expect: simd_shuffle_down at \S+: thread 0 reads lane 16, which has returned
// launch: {"groups": 1, "group": 32}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
    if (lane >= 16) {
        return;
    }
    float x = float(lane);
    x += simd_shuffle_down(x, 16);  // BUG: lanes 16-31 have returned
    out[lane] = x;
}
