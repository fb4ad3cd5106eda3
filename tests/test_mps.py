"""On a real Mac: the built Metal kernel and the run-time Metal path on MPS against the reference.

Skipped where MPS is unavailable (every Linux machine). The built kernel is taken from
``GGUF_DEQUANT_METAL_BUILD`` (a kernel-builder output directory, e.g. ``build/``) or, with
``GGUF_DEQUANT_HUB=1``, from the Hub; the run-time path needs torch >= 2.7.

Fast math: every product in the formats is exact in float32, so FMA contraction cannot change results,
and these tests demand bit equality. The kernels do not depend on denormals either (tests/test_fast_math.py
proves it on Linux with flush-to-zero); ``test_tiny_scales_on_mps`` feeds the same subnormal scales and
inputs to the GPU, and ``test_subnormal_results_are_kept`` names the one thing only hardware can say:
whether the GPU keeps results that are subnormal by nature (MXFP4 with E8M0 scale 0 or 1).
"""

import os

import numpy as np
import pytest
import torch

from gguf_dequant import metal_jit, reference, testing

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES
from .test_fast_math import assert_only_subnormals_flushed, tiny_blocks

pytestmark = [pytest.mark.mps, pytest.mark.skipif(not torch.backends.mps.is_available(),
                                                   reason="needs a Mac with MPS (torch.backends.mps)")]


def _built_kernel():
    import kernels

    if os.environ.get("GGUF_DEQUANT_METAL_BUILD"):
        return kernels.get_local_kernel(os.environ["GGUF_DEQUANT_METAL_BUILD"], backend="metal")
    if os.environ.get("GGUF_DEQUANT_HUB") == "1":
        return kernels.get_kernel("kernels-community/gguf-dequant", version=1)
    pytest.skip("set GGUF_DEQUANT_METAL_BUILD=<build dir> or GGUF_DEQUANT_HUB=1 to test the built kernel")


def _blocks(name, seed):
    rng = np.random.default_rng(seed)
    raw = np.concatenate([testing.random_blocks(name, 300, rng, finite=False).reshape(-1),
                          testing.random_blocks(name, 300, rng).reshape(-1)])
    return torch.from_numpy(raw)


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_built_kernel_on_mps(name, dtype):
    k = _built_kernel()
    blob = _blocks(name, 1)
    got = k.dequantize(blob.to("mps"), name, dtype)
    assert got.device.type == "mps"
    testing.assert_bits_equal(got.cpu(), reference.dequantize(blob, name, dtype), f"built {name} -> {dtype}")


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_runtime_metal_path_on_mps(name, dtype):
    if not metal_jit.available():
        pytest.skip("torch.mps.compile_shader needs torch >= 2.7")
    blob = _blocks(name, 2)
    got = metal_jit.dequantize(blob.to("mps"), name, dtype)
    testing.assert_bits_equal(got.cpu(), reference.dequantize(blob, name, dtype), f"jit {name} -> {dtype}")


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "IQ2_XXS", "MXFP4"])
def test_reference_on_mps(name, dtype):
    """The pure-torch reference itself on MPS (uint8 shift bugs, view(dtype) pitfalls)."""
    blob = _blocks(name, 3)
    testing.assert_bits_equal(reference.dequantize(blob.to("mps"), name, dtype).cpu(),
                              reference.dequantize(blob, name, dtype), f"reference on mps {name}")


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_tiny_scales_on_mps(name, dtype):
    """Subnormal scales and inputs: bit-exact except outputs that are subnormal by nature (flushed to a
    zero of the same sign at worst), through the run-time path and, when configured, the built kernel."""
    blob = torch.from_numpy(tiny_blocks(name, np.random.default_rng(13)))
    expected = reference.dequantize(blob, name, dtype)
    if metal_jit.available():
        got = metal_jit.dequantize(blob.to("mps"), name, dtype).cpu()
        assert_only_subnormals_flushed(got, expected, f"jit {name} -> {dtype}")
    if os.environ.get("GGUF_DEQUANT_METAL_BUILD") or os.environ.get("GGUF_DEQUANT_HUB") == "1":
        got = _built_kernel().dequantize(blob.to("mps"), name, dtype).cpu()
        assert_only_subnormals_flushed(got, expected, f"built {name} -> {dtype}")


def test_subnormal_results_are_kept():
    """If this fails while the rest passes, the Metal compiler flushes f32 subnormals (fast math)."""
    if not metal_jit.available():
        pytest.skip("torch.mps.compile_shader needs torch >= 2.7")
    raw = testing.random_blocks("MXFP4", 64, np.random.default_rng(4))
    raw[:, 0] = np.arange(64) % 2  # E8M0 0 and 1: scales 2^-128 and 2^-127
    blob = torch.from_numpy(raw.reshape(-1))
    testing.assert_bits_equal(metal_jit.dequantize(blob.to("mps"), "MXFP4").cpu(),
                              reference.dequantize(blob, "MXFP4"), "MXFP4 subnormal results")


def test_storage_offsets_and_out():
    k = _built_kernel()
    blob = _blocks("Q4_0", 5)
    padded = torch.zeros(blob.numel() + 7, dtype=torch.uint8)
    padded[7:] = blob
    out = torch.full((3, blob.numel() // 18 * 32), float("nan"), device="mps")
    k.dequantize(padded.to("mps")[7:], "Q4_0", out=out[1])
    testing.assert_bits_equal(out[1].cpu(), reference.dequantize(blob, "Q4_0"))
    assert torch.isnan(out[0]).all() and torch.isnan(out[2]).all()
