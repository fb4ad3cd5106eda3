// Seeded bug: the two halves of a simdgroup call different SIMD-group functions.
// expect: simdgroup 0 diverges: threads 0-15 wait at simd_sum \(\S+\) but threads 16-31 at simd_max
// launch: {"groups": 1, "group": 32}
#include <metal_stdlib>
using namespace metal;

kernel void bad(device float *out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
    float x = float(lane);
    if (lane < 16) {
        x = simd_sum(x);  // BUG: lanes 16-31 are live and at simd_max
    } else {
        x = simd_max(x);
    }
    out[lane] = x;
}
