"""The launch rule (gguf_dequant/launch.py) that the run-time Metal path and dequantize.mm share: threads per
group = min(THREADGROUP_SIZE, the pipeline's maximum, the grid), and no launch past MAX_GRID_THREADS.

The run-time path is exercised on Linux through stand-ins for the object ``torch.mps.compile_shader``
returns: kernels that report ``max_threads_per_threadgroup`` and record their calls, and kernels that run
the same source in the shader harness.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gguf_dequant import launch, metal_jit, reference, testing
from gguf_dequant.types import BY_NAME

ROOT = Path(__file__).resolve().parents[1]


class RecordingKernel:
    """A compile_shader kernel function: reports its pipeline limit and records each call."""

    def __init__(self, max_threads: int):
        self.max_threads_per_threadgroup = max_threads
        self.calls = []

    def __call__(self, *args, threads=None, group_size=None):
        assert group_size <= self.max_threads_per_threadgroup, "torch raises past the pipeline maximum"
        self.calls.append({"args": args, "threads": threads, "group_size": group_size})


class RecordingLibrary:
    def __init__(self, max_threads: int):
        self.max_threads = max_threads
        self.kernels: dict[str, RecordingKernel] = {}

    def __getattr__(self, name):
        if not name.startswith("dequantize_"):
            raise AttributeError(name)
        return self.kernels.setdefault(name, RecordingKernel(self.max_threads))


def _launch(qtype, n, max_threads, dtype=torch.float16):
    lib = RecordingLibrary(max_threads)
    src, dst = torch.zeros(4, dtype=torch.uint8), torch.zeros(4, dtype=dtype)
    metal_jit._dispatch(lib, qtype, src, dst, n)
    (kernel,) = lib.kernels.values()
    (call,) = kernel.calls
    assert call["args"] == (src, dst, n)
    assert metal_jit.kernel_name(qtype, dtype) in lib.kernels
    return call["threads"], call["group_size"]


@pytest.mark.parametrize("max_threads", [1024, 256, 192, 64, 32, 1])
def test_group_is_clamped_to_the_pipeline_maximum(max_threads):
    threads, group = _launch("Q4_K", 1000 * 256, max_threads)
    assert threads == 1000 * 256 // launch.ELEMS_PER_THREAD["Q4_K"]
    assert group == min(launch.THREADGROUP_SIZE, max_threads)


@pytest.mark.parametrize("name,n,threads", [("Q4_0", 32, 2), ("F32", 3, 1), ("F16", 17, 3), ("Q4_K", 256, 8)])
def test_group_is_clamped_to_a_small_grid(name, n, threads):
    assert _launch(name, n, 1024) == (threads, threads)


def test_oversized_launch_is_refused_before_anything_runs():
    lib = RecordingLibrary(1024)
    s = launch.ELEMS_PER_THREAD["Q8_0"]
    limit = launch.MAX_GRID_THREADS
    assert launch.checked_threads("Q8_0", limit * s) == limit  # the largest launch is allowed
    with pytest.raises(ValueError, match="more than one Metal launch can index"):
        metal_jit._dispatch(lib, "Q8_0", torch.zeros(4, dtype=torch.uint8), torch.zeros(4), limit * s + 1)
    assert not any(k.calls for k in lib.kernels.values())
    with pytest.raises(ValueError, match="split the tensor"):
        launch.grid("F32", (limit + 1) * launch.ELEMS_PER_THREAD["F32"])


def test_dequantize_mm_follows_the_same_rule():
    """The compiled Metal host code cannot run here: check that it reads the generated limits and takes
    the minimum of the same three terms (launch.py is the one description; gguf_types.h carries it)."""
    mm = (ROOT / "metal" / "dequantize.mm").read_text()
    header = (ROOT / "metal" / "gguf_types.h").read_text()
    assert f"#define GGUF_MAX_GRID_THREADS {launch.MAX_GRID_THREADS}ull" in header
    assert f"#define GGUF_THREADGROUP_SIZE {launch.THREADGROUP_SIZE}" in header
    assert re.search(r"n_threads\)?\s*<=\s*GGUF_MAX_GRID_THREADS", mm)
    group = re.search(r"std::min<NSUInteger>\(\s*\{([^}]*)\}\)", mm)
    assert group, "dequantize.mm: the threadgroup size is not a std::min over the launch rule's terms"
    terms = group.group(1)
    for term in ("GGUF_THREADGROUP_SIZE", "maxTotalThreadsPerThreadgroup", "n_threads"):
        assert term in terms, f"dequantize.mm: group size ignores {term}"


# ---- the clamped launch still decodes correctly: the same source run in the shader harness ----------------

class HarnessLibrary:
    """compile_shader's library object, backed by the shader harness running metal_jit.source()."""

    def __init__(self, path, max_threads):
        from harness import msl_harness

        self.lib = msl_harness.compile(path)
        self.max_threads = max_threads
        self.groups = []

    def __getattr__(self, name):
        if not name.startswith("dequantize_"):
            raise AttributeError(name)

        def kernel(src, dst, n, threads, group_size):
            assert group_size <= self.max_threads
            self.groups.append(group_size)
            res = self.lib.dispatch_threads(name, [src, dst, np.uint64(n)], threads, group_size)
            assert not res.unwritten.get(1), f"{name}: elements left unwritten"

        kernel.max_threads_per_threadgroup = self.max_threads
        return kernel


@pytest.mark.msl
@pytest.mark.parametrize("max_threads", [32, 96])
@pytest.mark.parametrize("name", ["Q4_K", "IQ2_XS", "BF16", "MXFP4"])
def test_clamped_launch_decodes_like_the_reference(name, max_threads):
    from harness import msl_harness

    if not msl_harness.available():
        pytest.skip("clang-19 is not installed")
    path = ROOT / ".cache" / "jit" / "gguf_dequant_jit.metal"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != metal_jit.source():
        path.write_text(metal_jit.source())
    lib = HarnessLibrary(path, max_threads)
    t = BY_NAME[name]
    n_blocks = 101 if t.block_elems > 1 else 101 * 64 + 5  # more threads than a group, the last group partial
    raw = torch.from_numpy(testing.random_blocks(name, n_blocks, np.random.default_rng(7), finite=False).reshape(-1))
    for dtype in (torch.float32, torch.bfloat16):
        expected = reference.dequantize(raw, name, dtype)
        dst = torch.empty_like(expected)
        metal_jit._dispatch(lib, name, raw, dst, dst.numel())
        testing.assert_bits_equal(dst, expected, f"clamped launch {name} -> {dtype}, group <= {max_threads}")
    assert lib.groups and max(lib.groups) == min(max_threads, launch.THREADGROUP_SIZE)
