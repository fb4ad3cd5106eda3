"""The harness's trace mode and the Metal performance model (harness/trace.py, harness/perf.py): known answers
for the counting (lines and sectors per SIMD access, unique DRAM bytes, instruction classes, stack arrays,
sampling), the model's terms, and one real kernel of ours traced end to end."""

from pathlib import Path

import numpy as np
import pytest

from harness import msl_harness, perf

pytestmark = [pytest.mark.msl,
              pytest.mark.skipif(not msl_harness.available(), reason="clang-19 is not installed")]

KERNELS = Path(__file__).resolve().parent / "msl_trace" / "trace_kernels.metal"
M2 = perf.CHIPS["M2 Max"]


@pytest.fixture(scope="module")
def lib():
    return msl_harness.compile(KERNELS, trace=True)


def run(lib, name, buffers, threads, group, **kw):
    return lib.dispatch_threads(name, buffers, threads, group, trace=True, **kw).trace


def test_coalesced_float4_copy(lib):
    a = np.arange(4 * 256, dtype=np.float32)
    tr = run(lib, "copy_float4", [a, np.empty_like(a)], 256, 64)
    dev = tr.memory["device"]
    assert dev["instances"] == 2 * 8  # a load and a store per simdgroup, 8 simdgroups
    assert dev["lines"] / dev["instances"] == 4  # 512 contiguous bytes
    assert dev["sectors"] / dev["instances"] == 16
    assert dev["bytes_used"] == 2 * a.nbytes
    assert tr.dram == {0: (a.nbytes, 0), 1: (0, a.nbytes)}
    assert tr.simd_instructions["mem_device"] == 16


def test_strided_and_broadcast_loads(lib):
    a = np.arange(32 * 64, dtype=np.float32)
    tr = run(lib, "stride_128", [a, np.empty(64, np.float32)], 64, 64)
    load = [s for s in tr.sites if not s["write"]]
    assert len(load) == 1 and load[0]["lines_per_access"] == 32 and load[0]["bytes_per_access"] == 128
    assert tr.dram[0] == (64 * 4, 0)  # 4 bytes of each 128-byte line are used
    tr = run(lib, "broadcast", [a, np.empty(64, np.float32)], 64, 64)
    load = [s for s in tr.sites if not s["write"]]
    assert load[0]["lines_per_access"] == 1 and load[0]["bytes_per_access"] == 4 and load[0]["lanes_per_access"] == 32
    assert tr.dram[0] == (4, 0)


@pytest.mark.parametrize("n", [1, 7, 40])
def test_loop_instruction_mix_and_instances(lib, n):
    a = np.ones(32 * n, np.float32)
    tr = run(lib, "loop_mix", [a, np.empty(64, np.float32), np.uint32(n)], 64, 64)
    # per lane: n fma and n conversions, whatever the unrolling; 2 simdgroups issue them once each
    assert tr.lane_instructions["float"] == 64 * n
    assert tr.lane_instructions["conv"] == 64 * n
    assert tr.simd_instructions["float"] == 2 * n
    load = [s for s in tr.sites if not s["write"] and s["space"] == 1]
    assert sum(s["instances"] for s in load) == 2 * n  # instance k matched across the lanes
    assert all(s["lines_per_access"] == 1 for s in load)
    assert tr.dram[0] == (a.nbytes, 0)  # both simdgroups read the same bytes: counted once


def test_unique_bytes_with_overlaps_and_sampling(lib):
    groups, size = 8, 32
    n = groups * size
    a = np.ones(16 + n + 7 + 1024, np.float32)  # a tail nobody reads
    read = (16 + n + 7) * 4
    full = run(lib, "windows", [a, np.empty(n, np.float32)], n, size)
    assert full.dram[0] == (read, 0)  # overlapping windows and the shared header: every byte once
    assert full.groups_traced == groups
    # 2 of 8 groups traced: the bytes only one traced group read (its window, 39 floats) scale by 8 / 2; the
    # header both read counts once. (The 7 floats each window shares with an untraced neighbour count twice:
    # the estimate's bias for overlapping neighbours.)
    part = run(lib, "windows", [a, np.empty(n, np.float32)], n, size, groups_traced=[0, 5])
    assert part.groups_traced == 2 and part.groups_total == groups
    assert part.dram[0][0] == 16 * 4 + 2 * (size + 7) * 4 * 4
    assert part.memory["device"]["instances"] == full.memory["device"]["instances"]


def test_stack_arrays_flagged(lib):
    a = np.arange(16 * 32, dtype=np.float32)
    tr = run(lib, "dynamic_array", [a, np.empty(32, np.float32), np.uint32(3)], 32, 32)
    assert len(tr.stack_arrays) == 1 and tr.stack_arrays[0]["type"] == "[16 x float]"
    line = KERNELS.read_text().splitlines().index("    b[i] = t[(i + n) % 16];") + 1
    assert tr.stack_arrays[0]["location"].endswith(f"trace_kernels.metal:{line}")
    tr = run(lib, "static_array", [a, np.empty(32, np.float32)], 32, 32)
    assert tr.stack_arrays == []


def test_threadgroup_simd_and_barriers(lib):
    a = np.arange(128, dtype=np.float32)
    tr = run(lib, "staged", [a, np.empty(128, np.float32)], 128, 64)
    tg = tr.memory["threadgroup"]
    assert tg["instances"] == 4 * 2 and tg["lines"] / tg["instances"] == 1  # 2 groups x 2 simdgroups, store + load
    assert tr.threadgroup_bytes == 64 * 4
    assert tr.simd_instructions["barrier"] == 4 * 2
    assert tr.simd_instructions["simd"] == 4 * 10  # one simd_sum per simdgroup (10 issue slots)


def test_model_terms_and_limiter(lib):
    a = np.arange(4 * 4096, dtype=np.float32)
    copy = perf.model(run(lib, "copy_float4", [a, np.empty_like(a)], 4096, 256), M2, 256)
    assert copy.limiter == "dram" and copy.dram_fraction == 1.0
    assert copy.terms["dram"] == pytest.approx(2 * a.nbytes / 400e9)
    b = np.arange(32 * 4096, dtype=np.float32)
    strided = perf.model(run(lib, "stride_128", [b, np.empty(4096, np.float32)], 4096, 256), M2, 256)
    # 128 loads of 32 lines and 128 stores of 1 line over 38 cores, whole groups per core (16 groups: 1 each)
    lines = 128 * 32 + 128 * 1
    assert strided.terms["l1"] == pytest.approx(lines / 16 / 1.398e9)
    assert strided.limiter == "l1" and strided.lines_per_access == pytest.approx(lines / 256)


def test_trace_needs_a_trace_build():
    plain = msl_harness.compile(KERNELS)
    with pytest.raises(msl_harness.MslError, match="trace=True"):
        plain.dispatch_threads("copy_float4", [np.zeros(4, np.float32), np.zeros(4, np.float32)], 1, 1, trace=True)


def test_our_q4_k_matvec_traced():
    """Our mul_mv on Q4_K, sampled: the weights are read once (unique bytes = the blocks of the traced rows,
    extrapolated), x is shared, and the model's row carries the limiter and a positive time."""
    rng = np.random.default_rng(0)
    n, k = 64, 1024
    w = perf._blocks("Q4_K", n, k, rng)
    x = rng.standard_normal((1, k)).astype(np.float32)
    launch = perf.ours_linear("Q4_K", w, x)
    full = perf.traced(launch, None)
    assert full.dram[0][0] == w.nbytes and full.dram[1][0] == x.nbytes and full.dram[3][1] == n * 4
    sampled = perf.traced(launch, 4)
    assert sampled.groups_traced == 4
    assert sampled.dram[0][0] == pytest.approx(w.nbytes)
    r = perf.model(full, M2, launch.threads_per_group)
    assert r.seconds > 0 and r.limiter in r.terms
