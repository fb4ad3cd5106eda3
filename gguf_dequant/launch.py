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
