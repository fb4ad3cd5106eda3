// Known-answer kernels for the harness's synchronisation features (tests/test_msl_sync.py).
#include <metal_stdlib>
using namespace metal;

// Block reduction: simd_sum per simdgroup, partials through threadgroup memory, a second simd_sum.
kernel void block_sum(device const float *x [[buffer(0)]], device float *out [[buffer(1)]],
                      constant uint &n [[buffer(2)]],
                      uint gid [[threadgroup_position_in_grid]], uint tid [[thread_index_in_threadgroup]],
                      uint tpg [[threads_per_threadgroup]],
                      uint sg [[simdgroup_index_in_threadgroup]], uint lane [[thread_index_in_simdgroup]],
                      uint nsg [[simdgroups_per_threadgroup]]) {
    threadgroup float partial[32];
    float acc = 0.0f;
    for (uint i = gid * tpg * 4 + tid; i < min(n, (gid + 1) * tpg * 4); i += tpg) {
        acc += x[i];
    }
    acc = simd_sum(acc);
    if (lane == 0) {
        partial[sg] = acc;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (sg == 0) {
        float p = lane < nsg ? partial[lane] : 0.0f;
        p = simd_sum(p);
        if (lane == 0) {
            out[gid] = p;
        }
    }
}

// Row-wise dot products, one simdgroup per row (a GEMV-shaped reduction): out[r] = sum_k w[r, k] x[k].
kernel void rows_dot(device const float *w [[buffer(0)]], device const float *x [[buffer(1)]],
                     device float *out [[buffer(2)]], constant uint &k [[buffer(3)]],
                     uint2 tg [[threadgroup_position_in_grid]], ushort lane [[thread_index_in_simdgroup]],
                     ushort sg [[simdgroup_index_in_threadgroup]], ushort nsg [[simdgroups_per_threadgroup]]) {
    const uint row = tg.x * nsg + sg;
    float acc = 0.0f;
    for (uint i = lane; i < k; i += 32) {
        acc += w[row * k + i] * x[i];
    }
    acc = simd_sum(acc);
    if (lane == 0) {
        out[row] = acc;
    }
}

// Inclusive prefix sum over the group: simd_prefix_inclusive_sum per simdgroup, simdgroup totals
// scanned through threadgroup memory (uint: exact).
kernel void group_scan(device const uint *x [[buffer(0)]], device uint *out [[buffer(1)]],
                       uint gid [[thread_position_in_grid]], ushort tid [[thread_index_in_threadgroup]],
                       ushort lane [[thread_index_in_simdgroup]], ushort sg [[simdgroup_index_in_threadgroup]],
                       ushort nsg [[simdgroups_per_threadgroup]]) {
    threadgroup uint totals[32];
    const uint v = x[gid];
    const uint incl = simd_prefix_inclusive_sum(v);
    const uint excl = simd_prefix_exclusive_sum(v);
    const uint total = simd_sum(v);  // not lane 31's prefix: a partial simdgroup has no lane 31
    if (lane == 0) {
        totals[sg] = total;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (sg == 0) {
        const uint t = lane < nsg ? totals[lane] : 0u;
        const uint before = simd_prefix_exclusive_sum(t);
        simdgroup_barrier(mem_flags::mem_threadgroup);
        if (lane < nsg) {
            totals[lane] = before;
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[2 * gid] = totals[sg] + incl;
    out[2 * gid + 1] = totals[sg] + excl + v;
    (void)tid;
}

// Transposition through a threadgroup tile (2-D groups of 8x8, whole groups).
kernel void transpose_tile(device const float *a [[buffer(0)]], device float *b [[buffer(1)]],
                           constant uint2 &size [[buffer(2)]],
                           uint2 tg [[threadgroup_position_in_grid]], uint2 tt [[thread_position_in_threadgroup]],
                           uint2 pos [[thread_position_in_grid]]) {
    threadgroup float tile[8][9];
    tile[tt.y][tt.x] = a[pos.y * size.x + pos.x];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    b[(tg.x * 8 + tt.y) * size.y + tg.y * 8 + tt.x] = tile[tt.x][tt.y];
}

// C = A * B + C0 for one 8x8 tile per simdgroup (row-major 8x8 matrices, one per simdgroup).
kernel void mma8(device const float *a [[buffer(0)]], device const half *b [[buffer(1)]],
                 device const float *c [[buffer(2)]], device float *d [[buffer(3)]],
                 device float2 *owned [[buffer(4)]],
                 uint sg [[simdgroup_index_in_threadgroup]], uint lane [[thread_index_in_simdgroup]],
                 uint tg [[threadgroup_position_in_grid]], uint nsg [[simdgroups_per_threadgroup]]) {
    threadgroup half bt[64 * 4];
    const uint m = tg * nsg + sg;
    for (uint i = lane; i < 64; i += 32) {
        bt[sg * 64 + i] = b[m * 64 + i];
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);
    simdgroup_float8x8 ma, mc;
    simdgroup_half8x8 mb;
    simdgroup_load(ma, a + m * 64);
    simdgroup_load(mb, bt + sg * 64, 8, 0, true);  // B is stored transposed
    simdgroup_load(mc, c + m * 64);
    owned[m * 32 + lane] = ma.thread_elements();
    simdgroup_multiply_accumulate(mc, ma, mb, mc);
    simdgroup_store(mc, d + m * 64);
}

// Histogram with atomics on threadgroup memory, flushed to device memory with atomics.
kernel void histogram(device const uchar *x [[buffer(0)]], device atomic_uint *bins [[buffer(1)]],
                      constant uint &n [[buffer(2)]],
                      uint gid [[thread_position_in_grid]], uint tid [[thread_index_in_threadgroup]],
                      uint tpg [[threads_per_threadgroup]]) {
    threadgroup atomic_uint local_bins[16];
    for (uint i = tid; i < 16; i += tpg) {
        atomic_store_explicit(&local_bins[i], 0u, memory_order_relaxed);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (gid < n) {
        atomic_fetch_add_explicit(&local_bins[x[gid] & 15], 1u, memory_order_relaxed);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint i = tid; i < 16; i += tpg) {
        atomic_fetch_add_explicit(&bins[i], atomic_load_explicit(&local_bins[i], memory_order_relaxed),
                                  memory_order_relaxed);
    }
}

// simd_sum of float under the launch's simd_order, lanes >= live return first.
kernel void simd_sum_order(device const float *x [[buffer(0)]], device float *out [[buffer(1)]],
                           constant uint &live [[buffer(2)]],
                           uint gid [[thread_position_in_grid]], uint lane [[thread_index_in_simdgroup]]) {
    if (lane >= live) {
        return;
    }
    out[gid] = simd_sum(x[gid]);
}

// Every SIMD-group function on each lane's value; lanes >= live have returned.
kernel void simd_battery(device const uint *x [[buffer(0)]], device uint *out [[buffer(1)]],
                         constant uint &live [[buffer(2)]],
                         uint gid [[thread_position_in_grid]], uint lane [[thread_index_in_simdgroup]]) {
    if (lane >= live) {
        return;
    }
    const uint v = x[gid];
    device uint *o = out + gid * 32;
    o[0] = simd_sum(v);
    o[1] = simd_product(v | 1u);
    o[2] = simd_min(v);
    o[3] = simd_max(v);
    o[4] = simd_and(v);
    o[5] = simd_or(v);
    o[6] = simd_xor(v);
    o[7] = simd_prefix_inclusive_sum(v);
    o[8] = simd_prefix_exclusive_sum(v);
    o[9] = simd_prefix_inclusive_product(v | 1u);
    o[10] = simd_prefix_exclusive_product(v | 1u);
    o[11] = simd_shuffle(v, ushort(live - 1 - lane));
    o[12] = simd_shuffle_xor(v, ushort(1));
    o[13] = simd_shuffle_up(v, ushort(3));
    o[14] = live == 32 ? simd_shuffle_down(v, ushort(5)) : 0u;
    o[15] = live == 32 ? simd_shuffle_rotate_up(v, ushort(7)) : 0u;
    o[16] = live == 32 ? simd_shuffle_rotate_down(v, ushort(9)) : 0u;
    o[17] = live == 32 ? simd_shuffle_up_and_fill(v, v + 1000u, ushort(2)) : 0u;
    o[18] = live == 32 ? simd_shuffle_down_and_fill(v, v + 1000u, ushort(3)) : 0u;
    o[19] = live == 32 ? simd_shuffle_up_and_fill(v, v + 1000u, ushort(1), ushort(8)) : 0u;
    o[20] = live == 32 ? simd_shuffle_down_and_fill(v, v + 1000u, ushort(2), ushort(8)) : 0u;
    o[21] = simd_broadcast(v, ushort(2));
    o[22] = simd_broadcast_first(v);
    o[23] = uint(ulong(simd_ballot((v & 1u) != 0)));
    o[24] = simd_all(v < 1000u) ? 1u : 0u;
    o[25] = simd_any((v & 7u) == 0) ? 1u : 0u;
    o[26] = simd_is_first() ? 1u : 0u;
    o[27] = quad_sum(v);
    o[28] = quad_shuffle_xor(v, ushort(2));
    o[29] = quad_broadcast(v, ushort(3));
    o[30] = quad_prefix_exclusive_sum(v);
    o[31] = uint(ulong(simd_active_threads_mask()));
}

// Every thread-position attribute, 3-D (dispatchThreads: partial last groups).
kernel void positions_3d(device uint *out [[buffer(0)]],
                         uint3 gpos [[thread_position_in_grid]], uint3 tg [[threadgroup_position_in_grid]],
                         uint3 tt [[thread_position_in_threadgroup]], uint3 tsz [[threads_per_threadgroup]],
                         uint3 ngroups [[threadgroups_per_grid]], uint3 grid [[threads_per_grid]],
                         uint tidx [[thread_index_in_threadgroup]], uint sg [[simdgroup_index_in_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]], uint width [[threads_per_simdgroup]],
                         uint nsg [[simdgroups_per_threadgroup]]) {
    device uint *o = out + ((gpos.z * grid.y + gpos.y) * grid.x + gpos.x) * 20;
    o[0] = gpos.x, o[1] = gpos.y, o[2] = gpos.z;
    o[3] = tg.x, o[4] = tg.y, o[5] = tg.z;
    o[6] = tt.x, o[7] = tt.y, o[8] = tt.z;
    o[9] = tsz.x, o[10] = tsz.y, o[11] = tsz.z;
    o[12] = ngroups.x * 10000 + ngroups.y * 100 + ngroups.z;
    o[13] = grid.x * 10000 + grid.y * 100 + grid.z;
    o[14] = tidx, o[15] = sg, o[16] = lane, o[17] = width, o[18] = nsg;
    o[19] = 7;
}

// A [[threadgroup(0)]] buffer sized by the launch: group sum through it.
kernel void dynamic_tg_sum(device const float *x [[buffer(0)]], device float *out [[buffer(1)]],
                           threadgroup float *scratch [[threadgroup(0)]],
                           uint gid [[thread_position_in_grid]], uint tid [[thread_index_in_threadgroup]],
                           uint tpg [[threads_per_threadgroup]], uint g [[threadgroup_position_in_grid]]) {
    scratch[tid] = x[gid];
    for (uint s = tpg / 2; s > 0; s /= 2) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
        if (tid < s) {
            scratch[tid] += scratch[tid + s];
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid == 0) {
        out[g] = scratch[0];
    }
}

// Reads threadgroup memory no thread wrote in this group: the poison of each group start.
kernel void read_poison(device uint *out [[buffer(0)]], uint gid [[thread_position_in_grid]],
                        uint tid [[thread_index_in_threadgroup]]) {
    threadgroup uint tile[32];
    out[gid] = tile[tid];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    tile[tid] = gid;
}

// Out-of-bounds device write from a fiber (caught by the guard page, reported with file:line).
kernel void device_oob(device float *out [[buffer(0)]], uint gid [[thread_position_in_grid]]) {
    const float s = simd_sum(1.0f);
    out[gid + 64] = s;  // the first element past the 64-float buffer: on its guard page
}

// Function constants specialise a kernel at pipeline creation (compile(..., function_constants=)).
constant bool fc_scale [[function_constant(0)]];
constant float fc_factor [[function_constant(1)]];
constant int fc_offset [[function_constant(2)]];
constant int fc_offset_or_default = is_function_constant_defined(fc_offset) ? fc_offset : 100;

kernel void specialised(device float *out [[buffer(0)]], uint gid [[thread_position_in_grid]]) {
    out[gid] = (fc_scale ? float(gid) * fc_factor : float(gid)) + float(fc_offset_or_default);
}

// Lanes exchange values through threadgroup memory. mode 0: simdgroup_barrier between the write and the
// read of a neighbour lane (ordered); 1: no barrier (race); 2: read from the other simdgroup after only a
// simdgroup_barrier (race); 3: the same after a threadgroup_barrier (ordered).
kernel void exchange(device uint *out [[buffer(0)]], constant uint &mode [[buffer(1)]],
                     uint tid [[thread_index_in_threadgroup]], uint lane [[thread_index_in_simdgroup]]) {
    threadgroup uint slots[64];
    slots[tid] = tid * 10;
    if (mode == 0 || mode == 2) {
        simdgroup_barrier(mem_flags::mem_threadgroup);
    } else if (mode == 3) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    out[tid] = mode >= 2 ? slots[tid ^ 32] : slots[tid ^ 1];
    (void)lane;
}

// simdgroup_multiply on bfloat matrices, and the diagonal constructor: d1 = A * diag(2), d2 = A * B.
kernel void mm8_bfloat(device const bfloat *a [[buffer(0)]], device const bfloat *b [[buffer(1)]],
                       device float *d1 [[buffer(2)]], device float *d2 [[buffer(3)]]) {
    simdgroup_bfloat8x8 ma, mb;
    simdgroup_float8x8 two(2.0f), r1, r2;
    simdgroup_load(ma, a);
    simdgroup_load(mb, b);
    simdgroup_float8x8 fa;
    fa.thread_elements() = float2(ma.thread_elements());
    simdgroup_multiply(r1, fa, two);
    simdgroup_multiply(r2, ma, mb);
    simdgroup_store(r1, d1);
    simdgroup_store(r2, d2);
}

// Device atomics of every kind (threads run one after another here: the float sum is in thread order).
kernel void atomic_ops(device const int *x [[buffer(0)]], device atomic_int *ints [[buffer(1)]],
                       device atomic_float *sum [[buffer(2)]], uint gid [[thread_position_in_grid]]) {
    const int v = x[gid];
    atomic_fetch_min_explicit(&ints[0], v, memory_order_relaxed);
    atomic_fetch_max_explicit(&ints[1], v, memory_order_relaxed);
    atomic_fetch_and_explicit(&ints[2], v | 0x100, memory_order_relaxed);
    atomic_fetch_or_explicit(&ints[3], v & 0xF0, memory_order_relaxed);
    atomic_fetch_xor_explicit(&ints[4], v, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ints[5], 1, memory_order_relaxed);
    int expected = atomic_load_explicit(&ints[6], memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&ints[6], &expected, expected + v, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    if (gid == 3) {
        atomic_exchange_explicit(&ints[7], v, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&sum[0], float(v) * 0.1f, memory_order_relaxed);
}

// A thread-local array larger than a fiber's stack (Metal would spill it; here it overflows).
kernel void stack_hog(device float *out [[buffer(0)]], uint gid [[thread_position_in_grid]]) {
    float big[100000];
    for (uint i = 0; i < 100000; ++i) {
        big[i] = float(i + gid);
    }
    out[gid] = simd_sum(big[gid * 977 % 100000]);
}

// A kernel attribute that sets the pipeline's maximum; a function constant indexed by an expression.
#define FC_BASE 600
constant int fc_expr [[function_constant(FC_BASE + 1)]];

[[max_total_threads_per_threadgroup(64)]]
kernel void capped(device uint *out [[buffer(0)]], uint gid [[thread_position_in_grid]]) {
    out[gid] = gid + uint(fc_expr);
}

// Whole structs through threadgroup memory (struct copies become memcpy in the IR, checked too).
struct pair_block {
    half scale;
    uchar q[30];
};

kernel void struct_stage(device const pair_block *src [[buffer(0)]], device pair_block *dst [[buffer(1)]],
                         constant uint &barrier [[buffer(2)]],
                         uint tid [[thread_index_in_threadgroup]], uint tpg [[threads_per_threadgroup]]) {
    threadgroup pair_block blocks[32];
    blocks[tid] = src[tid];
    if (barrier != 0) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    dst[tid] = blocks[tpg - 1 - tid];
}
