"""How kernels are launched: the one description of the thread mapping, shared by the Metal host code,
the run-time Metal path, the CPU backend and the Linux shader harness (all read it from here or from
the header ``gguf_dequant.tools.gen_metal`` generates from it).

Thread mapping: the grid is 1-D. Thread ``t`` of a quantized type decodes elements
``[t * S, t * S + S)`` where ``S = ELEMS_PER_THREAD[type]`` divides the block size: the sub-block
``t % (block_elems / S)`` of block ``t / (block_elems / S)``. For the float types (block of one element)
thread ``t`` converts elements ``[t * S, min(t * S + S, n))``, so the last thread handles the tail.
Threads are grouped ``THREADGROUP_SIZE`` at a time (fewer when the pipeline allows fewer or the grid is
smaller: ``group_size``); the grid is exactly ``n_threads`` (dispatchThreads), at most ``MAX_GRID_THREADS``,
and every kernel takes the number of output elements as a 64-bit value in buffer 2 and returns early for
threads past it. Buffers: 0 = source bytes, 1 = output, 2 = element count.
"""

from __future__ import annotations

from .types import resolve

THREADGROUP_SIZE = 256
# Kernels read their index from a 32-bit `uint [[thread_position_in_grid]]`.
MAX_GRID_THREADS = 2**32 - 1

# Elements decoded per thread: a natural sub-block of each format (one scale, or one half of the nibbles).
ELEMS_PER_THREAD: dict[str, int] = {
    "F32": 8, "F16": 8, "BF16": 8,
    "Q4_0": 16, "Q4_1": 16, "Q5_0": 16, "Q5_1": 16, "Q8_0": 16, "IQ4_NL": 16, "MXFP4": 16,
    "NVFP4": 16, "Q1_0": 32, "Q2_0": 16,
    "Q2_K": 16, "Q3_K": 16, "Q4_K": 32, "Q5_K": 32, "Q6_K": 16,
    "IQ2_XXS": 32, "IQ2_XS": 32, "IQ2_S": 32, "IQ3_XXS": 32, "IQ3_S": 32, "IQ1_S": 32, "IQ1_M": 32,
    "IQ4_XS": 32, "TQ1_0": 32, "TQ2_0": 32,
}


def n_threads(qtype, n_elements: int) -> int:
    """Threads a launch needs for ``n_elements`` output elements."""
    t = resolve(qtype)
    s = ELEMS_PER_THREAD[t.name]
    return -(-n_elements // s)


def checked_threads(qtype, n_elements: int) -> int:
    """``n_threads``, refusing a launch past ``MAX_GRID_THREADS`` with a ValueError that says why."""
    threads = n_threads(qtype, n_elements)
    if threads > MAX_GRID_THREADS:
        raise ValueError(f"{n_elements} elements of {resolve(qtype).name} need {threads} threads, more than one "
                         f"Metal launch can index ({MAX_GRID_THREADS}); split the tensor")
    return threads


def group_size(threads: int, pipeline_max: int = THREADGROUP_SIZE) -> int:
    """Threads per threadgroup: ``THREADGROUP_SIZE``, but no more than the pipeline's
    ``maxTotalThreadsPerThreadgroup`` allows and no more than the grid has."""
    return max(1, min(THREADGROUP_SIZE, pipeline_max, threads))


def grid(qtype, n_elements: int, pipeline_max: int = THREADGROUP_SIZE) -> tuple[int, int]:
    """(threads in the grid, threads per threadgroup) for dequantizing ``n_elements`` elements with a
    pipeline whose maximum threadgroup size is ``pipeline_max``."""
    threads = checked_threads(qtype, n_elements)
    return threads, group_size(threads, pipeline_max)


# ---- Compute on packed weights (metal/gguf_matmul.h; the constants are generated into gguf_types.h) ----
#
# Contract v2: two tiers, each with one summation order per output y[m, n] that depends on nothing but K and
# the type, so a row's bits never depend on M within its tier, on its position or on the other rows.
# Mat-vec tier (mul_mv, M <= MATMUL_X_ROWS; mul_mv_id for up to MATMUL_X_ROWS tokens): the factored order of
# MV_FACTORED below for the quantized types; for the float types the decode-exact order: the weight row is cut
# into ns = ceil(K / S) sub-blocks of S = MV_FLOAT_SUB elements (a shorter last sub-block); lane l of a simdgroup owns sub-blocks l, l + 32, ... and accumulates
# acc = fma(w, x, acc) from +0 in that order (elements in order within a sub-block); then the butterfly over
# the 32 lanes (MV_SUM_ROUNDINGS); then + bias[n] in float32 when given; then one rounding to the output dtype.
# Matrix tier (mul_mm, M > MATMUL_X_ROWS; mul_mm_id for more tokens): K is padded with zeros to a multiple
# of MM_K; acc starts at +0 and takes one 8 x 8 x 8 simdgroup multiply-accumulate per 8 elements of K, in
# increasing k (inside one, the hardware's order: 8 products and acc); then + bias[n]; then one rounding.

SIMD_WIDTH = 32
MATMUL_X_ROWS = 8    # activation rows per simdgroup (a mul_mv threadgroup takes at most this many)
MV_SIMDGROUPS = 2    # mul_mv / mul_mv_id: simdgroups per threadgroup ...
MV_ROWS = 4          # ... each owning this many weight rows (sharing the x values a lane loads) below
MV_WIDE_M = 2        # this many rows of x (one row, and every mul_mv_id slot: twice the simdgroups to hide DRAM
MV_WIDE_ROWS = 8     # latency), from it this many (x loaded once per 8 weight rows). An output's order is the same.
MM_SIMDGROUPS = 4    # mul_mm / mul_mm_id: simdgroups per threadgroup (2 x 2, each MM_X_ROWS / 2 x rows by 32 weight rows)
MM_ROWS = 64         # weight rows of a tile ...
MM_X_ROWS = 64       # ... x rows of a tile (mul_mm_id: a window of one expert's slots); the weight tile's decode is
                     # shared by this many rows, and 8-row blocks past the last row are skipped ...
MM_K = 32            # ... decoded into threadgroup memory this many elements of K at a time (16 KiB of tiles: 3 groups
                     # per core; the factored types' tile loads touch 1-2 lines per row whatever the step)
MV_THREADS = MV_SIMDGROUPS * SIMD_WIDTH  # the kernels' [[max_total_threads_per_threadgroup]]
MM_THREADS = MM_SIMDGROUPS * SIMD_WIDTH
# The mat-vec tier's cross-lane sum: a butterfly with a pinned order (lane l + lane l ^ 16, then those sums at
# distance 8, 4, 2, 1; gguf_butterfly in metal/gguf_matmul.h), not simd_sum, whose order Apple does not document.
# Additions on one lane's path: log2 32.
MV_SUM_ROUNDINGS = 5


# The factored mat-vec order (contract v2; metal/gguf_matmul.h, kernel gguf_mv_accumulate for
# gguf_factored_core): mul_mv, mul_mv_id and mul_mm_id of these types write each weight as
# w = a * q + o, q a small integer code and (a, o) the scale and offset of its run (a stretch of elements
# sharing them). Without an offset they compute sum_k w_k x_k as sum over runs of a * sum q x; with one, as
# sum_k w_k x_k of the decoded weights w = fl(a q + o) (one fma per weight row, shared by every row of x: no
# per-run work per row of x). Per type: (P lanes per block, Q quads of 4 contiguous elements per lane and
# block, runs per lane and block, whether o is ever nonzero). Lane l of a simdgroup takes part p = l % P of
# blocks l / P, l / P + 32 / P, ... (in that order); per block, per run (in order): without an offset, it sums
# the run's q x by fma from +0 over its quads and their elements in order (dq), then acc = fma(a, dq, acc);
# with one, acc = fma(w, x, acc) per element in the same order. Then the butterfly over the 32 lanes, + bias,
# one rounding.
# Where each part's quads sit in the block is the type's gguf_mv_quad (metal/<type>.metal) and
# tests/test_msl_matmul.py's MV_QUADS.
MV_FACTORED: dict[str, tuple[int, int, int, bool]] = {
    "Q4_0": (4, 2, 1, False),
    "Q8_0": (8, 1, 1, False),
    "MXFP4": (4, 2, 1, False),
    "Q4_K": (16, 4, 2, True),
    "Q5_K": (16, 4, 2, True),
    "Q6_K": (16, 4, 4, False),
    "IQ4_XS": (16, 4, 2, False),
    "IQ2_XXS": (16, 4, 2, False),
    "IQ3_XXS": (16, 4, 2, False),
    "IQ2_XS": (16, 4, 2, False),
    "IQ2_S": (16, 4, 2, False),
    "IQ3_S": (16, 4, 2, False),
    "IQ1_S": (16, 4, 2, False),
    "IQ1_M": (16, 4, 2, False),
    "Q2_K": (16, 4, 4, True),
    "Q3_K": (16, 4, 4, False),
    "Q4_1": (8, 1, 1, True),
    "Q5_0": (8, 1, 1, False),
    "Q5_1": (8, 1, 1, True),
    "IQ4_NL": (8, 1, 1, False),
    "NVFP4": (8, 2, 1, False),
    "Q1_0": (8, 4, 1, False),
    "Q2_0": (8, 2, 1, False),
    "TQ1_0": (8, 8, 1, False),
    "TQ2_0": (16, 4, 1, False),
}

# The factored types whose matrix-tier weight tile is read through the factored access (coalesced words; see
# gguf_mm_weights in metal/gguf_matmul.h): no table staged in threadgroup memory, and quad j of part p at element
# 4 (PG QUADS (p / PG) + PG j + p % PG) of its block, PG = MM_PART_GROUP.get(type, PARTS) parts per group
# (tests/test_msl_matmul.py checks the layouts). The others decode sub-blocks.
MM_FACTORED = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
                         "IQ4_XS", "MXFP4", "Q1_0", "Q2_0", "TQ1_0", "TQ2_0"})
MM_PART_GROUP = {"Q4_K": 4, "Q5_K": 4, "IQ4_XS": 4}


# The float types' mat-vec tier: the decode-exact order with sub-blocks of this many elements (one vector of
# weights and one of x per lane and step when K is a multiple of it), instead of ELEMS_PER_THREAD.
MV_FLOAT_SUB = 4


def matvec_error_constant(qtype, k: int, bias: bool = False) -> int:
    """n of the mat-vec tier's bound |y - y_exact| <= n u / (1 - n u) * (B + |bias|), u = 2**-24, where
    B = sum_k |w_k x_k| (w the decoded weights; for the factored order without an offset, a q = w exactly).
    Decode-exact order, and factored with an offset: the longest lane chain (one rounding per fma), the
    butterfly (5), the bias addition. Factored without an offset: a run's dq chain (4 * Q / runs roundings),
    then every later fma of the lane's accumulator (1 per run, over ceil(blocks / (32 / P)) blocks), the
    butterfly (5), the bias addition."""
    t = resolve(qtype)
    if t.name not in MV_FACTORED:
        s = MV_FLOAT_SUB if t.block_elems == 1 else matmul_sub_elems(qtype)
        return s * -(-(-(-k // s)) // SIMD_WIDTH) + MV_SUM_ROUNDINGS + int(bias)
    parts, quads, runs, offset = MV_FACTORED[t.name]
    blocks_per_lane = -(-(k // t.block_elems) // (SIMD_WIDTH // parts))
    if offset:
        return 4 * quads * blocks_per_lane + MV_SUM_ROUNDINGS + int(bias)
    return 4 * quads // runs + blocks_per_lane * runs + MV_SUM_ROUNDINGS + int(bias)


def matmul_kernel(m_rows: int) -> str:
    """``"mv"`` (the mat-vec tier, weights read once per MATMUL_X_ROWS rows) or ``"mm"`` (the matrix tier:
    simdgroup matrices on a 64 x 64 tile) for M rows."""
    return "mv" if m_rows <= MATMUL_X_ROWS else "mm"


# Types whose mul_mv takes MV_WIDE_ROWS weight rows per simdgroup from one row of x (the others from MV_WIDE_M):
# ultra-low-bit types whose M = 1 is issue-bound. With 8 rows a simdgroup's x loads and per-block loop work serve
# twice the rows (and for IQ1 half as many threadgroups copy the 16 KiB grid): modelled on M2 Max, 4096 x 4096,
# 2-4% fewer instructions; on 40-core chips the 256 threadgroups fill the cores less evenly, so M3/M4 Max lose
# 1-2 points there (benchmarks/METAL_MATVEC_TYPES.md). TQ1_0 is left out: the 40-core chips lose more than M2 Max
# gains (with 8 lanes per block: M2 Max 63% -> 64% of peak, M3 Max 68% -> 64%, M4 Max 56% -> 53%).
MV_WIDE_FROM_ONE_ROW = frozenset({"IQ1_S", "IQ1_M", "Q1_0"})


def mv_wide_m(qtype=None) -> int:
    """Rows of x from which mul_mv of ``qtype`` takes MV_WIDE_ROWS weight rows per simdgroup (gguf_types.h's
    GGUF_MV_WIDE_M_<type>; None: the other types' MV_WIDE_M)."""
    return 1 if qtype is not None and resolve(qtype).name in MV_WIDE_FROM_ONE_ROW else MV_WIDE_M


def mv_rows(m_rows: int, qtype=None) -> int:
    """Weight rows per simdgroup of mul_mv with M rows of x (the kernel makes the same choice from M)."""
    return MV_WIDE_ROWS if m_rows >= mv_wide_m(qtype) else MV_ROWS


def matmul_grid(m_rows: int, n_out: int, kind: str | None = None, qtype=None) -> tuple[str, tuple[int, int], int]:
    """(kernel kind, threadgroups (x, y), threads per threadgroup) for y = x @ W^T with x (M, K), W (N, K) of
    ``qtype``: a ``dispatchThreadgroups`` launch. ``kind`` forces a kernel (each has its tier's order)."""
    kind = kind or matmul_kernel(m_rows)
    if kind == "mv":
        return (kind, (-(-n_out // (MV_SIMDGROUPS * mv_rows(m_rows, qtype))), -(-m_rows // MATMUL_X_ROWS)),
                MV_SIMDGROUPS * SIMD_WIDTH)
    if kind == "mm":
        return kind, (-(-n_out // MM_ROWS), -(-m_rows // MM_X_ROWS)), MM_THREADS
    raise ValueError(f"unknown matmul kernel kind {kind!r}")


def mul_mat_id_grid(n_tokens: int, n_used: int, n_out: int, n_experts: int,
                    kind: str | None = None) -> tuple[str, tuple[int, int, int], int]:
    """(kernel kind, threadgroups (x, y, z), threads per threadgroup) of mul_mat_id with ids (T, U):
    ``"mv_id"`` up to MATMUL_X_ROWS tokens (the mat-vec tier: a threadgroup row per slot, a slot gets the
    bits of a one-row mul_mv on its expert), else ``"mm_id"`` (the matrix tier: after mul_mat_id_map_grid's
    launch, 64 x 64 tiles over each expert's slots, grid (N tiles, E, ceil(T / 64)); a slot gets the bits of
    a mul_mm row on its expert)."""
    kind = kind or ("mv_id" if n_tokens <= MATMUL_X_ROWS else "mm_id")
    if kind == "mv_id":
        return kind, (-(-n_out // (MV_SIMDGROUPS * MV_ROWS)), n_tokens * n_used, 1), MV_SIMDGROUPS * SIMD_WIDTH
    if kind == "mm_id":
        return kind, (-(-n_out // MM_ROWS), max(n_experts, 1), -(-n_tokens // MM_X_ROWS)), MM_THREADS
    raise ValueError(f"unknown mul_mat_id kernel kind {kind!r}")


def mul_mat_id_map_grid(n_tokens: int, n_used: int, n_experts: int) -> tuple[int, int, int]:
    """(threadgroups, threads per threadgroup, uint32 words of the slot map) of mul_mm_id's first launch,
    ``mul_mm_id_map``: one simdgroup per expert lists its slots (the map: E counts, then E lists of T * U)."""
    return max(n_experts, 1), SIMD_WIDTH, n_experts + n_experts * n_tokens * n_used


def matmul_sub_elems(qtype) -> int:
    """S: elements of one sub-block, the unit a lane decodes and accumulates."""
    return ELEMS_PER_THREAD[resolve(qtype).name]


def matmul_error_constant(qtype, k: int, bias: bool = False, kind: str = "mv") -> int:
    """n of the bound |y - y_exact| <= n u / (1 - n u) * (B + |bias|), u = 2**-24, for one output of a kernel
    of ``kind``: "mv" (the mat-vec tier: mul_mv, mul_mv_id) as matvec_error_constant states it, or "mm" (the
    matrix tier: mul_mm, mul_mm_id; B = sum |w_k x_k|): any order inside each multiply-accumulate, so up to 8
    additions per step of 8 on a term's path, plus the product's own rounding, plus the bias addition."""
    if kind == "mm":
        return 8 * -(-k // 8) + 1 + int(bias)
    if kind != "mv":
        raise ValueError(f"unknown matmul kernel kind {kind!r}")
    return matvec_error_constant(qtype, k, bias)
