// Reduction-style kernels for measuring the harness's own cost (python -m harness.cost).
#include <metal_stdlib>
using namespace metal;

// out[r] = dot(w[r, :], x): one simdgroup per row, lanes stride the row, simd_sum.
kernel void rows_dot(device const float *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *out [[buffer(2)]], constant uint &k [[buffer(3)]],
                     uint tg [[threadgroup_position_in_grid]], ushort lane [[thread_index_in_simdgroup]],
                     ushort sg [[simdgroup_index_in_threadgroup]], ushort nsg [[simdgroups_per_threadgroup]]) {
    const uint row = tg * nsg + sg;
    float acc = 0.0f;
    for (uint i = lane; i < k; i += 32) {
        acc += w[row * k + i] * x[i];
    }
    acc = simd_sum(acc);
    if (lane == 0) {
        out[row] = acc;
    }
}

// The same with x staged through threadgroup memory in chunks of 1024 between barriers.
kernel void rows_dot_staged(device const float *w [[buffer(0)]], device const float *x [[buffer(1)]],
                            device float *out [[buffer(2)]], constant uint &k [[buffer(3)]],
                            uint tg [[threadgroup_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                            ushort tpg [[threads_per_threadgroup]], ushort lane [[thread_index_in_simdgroup]],
                            ushort sg [[simdgroup_index_in_threadgroup]], ushort nsg [[simdgroups_per_threadgroup]]) {
    threadgroup float xs[1024];
    const uint row = tg * nsg + sg;
    float acc = 0.0f;
    for (uint c = 0; c < k; c += 1024) {
        const uint len = min(1024u, k - c);
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint i = tid; i < len; i += tpg) {
            xs[i] = x[c + i];
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint i = lane; i < len; i += 32) {
            acc += w[row * k + c + i] * xs[i];
        }
    }
    acc = simd_sum(acc);
    if (lane == 0) {
        out[row] = acc;
    }
}
