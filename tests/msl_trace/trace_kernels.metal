// Kernels with known answers for the harness's trace mode (tests/test_perf_model.py).
#include <metal_stdlib>
using namespace metal;

// Coalesced: 32 lanes x 16 bytes = 512 contiguous bytes per SIMD access: 4 lines, 16 sectors.
kernel void copy_float4(device const float4 *a [[buffer(0)]], device float4 *b [[buffer(1)]],
                        uint i [[thread_position_in_grid]]) {
    b[i] = a[i];
}

// Scalar loads 128 bytes apart: 32 lines per SIMD access.
kernel void stride_128(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                       uint i [[thread_position_in_grid]]) {
    b[i] = a[i * 32];
}

// Every lane reads the same word: 1 line.
kernel void broadcast(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                      uint i [[thread_position_in_grid]]) {
    b[i] = a[0];
}

// A loop of n iterations, each one conversion and one fma; instance k of the load is matched across lanes:
// lane l reads a[32 k + l] (4 bytes, one line per access).
kernel void loop_mix(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                     constant uint &n [[buffer(2)]], uint i [[thread_position_in_grid]],
                     ushort lane [[thread_index_in_simdgroup]]) {
    float acc = 0.0f;
    for (uint k = 0; k < n; ++k) {
        acc = fma(a[32 * k + lane], float(k), acc);
    }
    b[i] = acc;
}

// Overlapping windows: thread i reads a[i .. i + 7]; threadgroup g also reads a shared header a[0 .. 15].
kernel void windows(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                    uint i [[thread_position_in_grid]]) {
    float s = a[i % 16];
    for (uint j = 0; j < 8; ++j) {
        s += a[16 + i + j];
    }
    b[i] = s;
}

// A thread array indexed at run time stays in stack memory: flagged.
kernel void dynamic_array(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                          constant uint &n [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    float t[16];
    for (int j = 0; j < 16; ++j) {
        t[j] = a[i * 16 + j];
    }
    b[i] = t[(i + n) % 16];
}

// The same array with constant indices only: registers, not flagged.
kernel void static_array(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                         uint i [[thread_position_in_grid]]) {
    float t[4];
    for (int j = 0; j < 4; ++j) {
        t[j] = a[i * 4 + j];
    }
    b[i] = t[0] + t[3];
}

// Threadgroup memory and a SIMD-group function: one store and one load per lane, one simd_sum, 2 barriers.
kernel void staged(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                   uint i [[thread_position_in_grid]], ushort tid [[thread_index_in_threadgroup]]) {
    threadgroup float xs[64];
    xs[tid] = a[i];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const float v = xs[63 - tid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    b[i] = simd_sum(v);
}
