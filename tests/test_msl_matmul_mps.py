"""On a real Mac: the Metal matmul kernels (run-time path, and the built kernel when given) on MPS.

Skipped where MPS is unavailable (every Linux machine). The GPU's order inside a simdgroup multiply-accumulate is
not documented (the mat-vec tier's lane sum is pinned, but its bits are not yet compared with the numpy model on a
GPU), so results are checked against float64 with each tier's bound (launch.matvec_error_constant for M <= 8,
launch.matmul_error_constant above), and for the properties the design guarantees whatever that order is:
batch invariance within each tier (a row's bits do not depend on M or its position; across the tiers only
for the types whose mat-vec order is mul_mm's), mul_mat_id slots equal to a one-row linear on their expert, NaN rows
for ids outside [0, E), one rounding to float16/bfloat16, determinism. The built kernel is taken from
``GGUF_DEQUANT_METAL_BUILD`` (a kernel-builder output directory), as in tests/test_mps.py.
"""

import os

import numpy as np
import pytest
import torch

from gguf_dequant import launch, metal_jit, reference, testing
from gguf_dequant.types import resolve

from .conftest import ALL_TYPES

pytestmark = [pytest.mark.mps, pytest.mark.skipif(not torch.backends.mps.is_available(),
                                                   reason="needs a Mac with MPS (torch.backends.mps)")]
U32 = 2.0 ** -24


def _paths():
    paths = {}
    if metal_jit.available():
        paths["jit"] = (metal_jit.linear, metal_jit.mul_mat_vec, metal_jit.mul_mat_id)
    if os.environ.get("GGUF_DEQUANT_METAL_BUILD"):
        import kernels

        k = kernels.get_local_kernel(os.environ["GGUF_DEQUANT_METAL_BUILD"], backend="metal")
        paths["built"] = (k.linear, k.mul_mat_vec, k.mul_mat_id)
    return paths


def _weights(name, n, k, seed):
    """(uint8 blocks (N, bytes_per_row) with finite scales, their float64 decoding)."""
    rng = np.random.default_rng(seed)
    raw = testing.random_blocks(name, n * (k // resolve(name).block_elems), rng).reshape(n, -1)
    blocks = torch.from_numpy(raw)
    return blocks, reference.dequantize(blocks, name, torch.float32).double()


def _k(name):
    return max(resolve(name).block_elems, 256) * 9


def _bound_ok(name, y, w64, x, bias=None, raw=None):
    """Within the matrix tier's bound, or with ``raw`` (the blocks' bytes) the mat-vec tier's (both against
    B = sum |w x|)."""
    x64 = x.double().cpu()
    exact = x64 @ w64.T + (0 if bias is None else bias.double().cpu())
    scale = x64.abs() @ w64.abs().T
    scale = scale + (0 if bias is None else bias.double().abs().cpu())
    c = launch.matmul_error_constant(name, w64.shape[1], bias is not None, "mm" if raw is None else "mv")
    return bool(((y.double().cpu() - exact).abs() <= c * U32 / (1 - c * U32) * scale).all())


@pytest.mark.parametrize("path", ["jit", "built"])
@pytest.mark.parametrize("name", ALL_TYPES)
def test_linear_on_mps(name, path):
    paths = _paths()
    if path not in paths:
        pytest.skip(f"{path} path unavailable (torch.mps.compile_shader / GGUF_DEQUANT_METAL_BUILD)")
    linear, mul_mat_vec, _ = paths[path]
    qtype = resolve(name).id  # the op schemas take the integer id
    k, n = _k(name), 37
    raw, w64 = _weights(name, n, k, 1)
    blocks = raw.to("mps")
    x = torch.randn(40, k, dtype=torch.bfloat16).to("mps")
    bias = torch.randn(n).to("mps")
    full = mul_mat_vec(blocks, x, qtype, n)  # M = 40: the matrix tier
    assert _bound_ok(name, full, w64, x.float())
    eight = mul_mat_vec(blocks, x[:8], qtype, n)  # the mat-vec tier
    assert _bound_ok(name, eight, w64, x[:8].float(), raw=raw)
    for m in (1, 3, 8):
        rows = torch.randperm(8)[:m].to("mps")
        testing.assert_bits_equal(mul_mat_vec(blocks, x[rows], qtype, n).cpu(), eight[rows].cpu(), f"{name} M={m}")
    for m in (9, 33):  # batch invariance within the matrix tier
        rows = torch.randperm(40)[:m].to("mps")
        testing.assert_bits_equal(mul_mat_vec(blocks, x[rows], qtype, n).cpu(), full[rows].cpu(), f"{name} M={m}")
    with_bias = linear(x[:5], blocks, qtype, bias)  # bfloat16 out, rounded once from the float32 sum + bias
    want = (mul_mat_vec(blocks, x[:5], qtype, n).cpu() + bias.cpu()).to(torch.bfloat16)
    testing.assert_bits_equal(with_bias.cpu(), want, f"{name} bias and bfloat16 rounding")
    testing.assert_bits_equal(mul_mat_vec(blocks, x, qtype, n).cpu(), full.cpu(), f"{name} determinism")


@pytest.mark.parametrize("path", ["jit", "built"])
def test_f16_subnormal_weights_on_mps(path):
    """F16 weights that are all half subnormals (the matrix tier keeps them half, as simdgroup_half8x8 operands
    against float x): a GPU that flushed them, or multiplied in half, would miss the bound by far."""
    paths = _paths()
    if path not in paths:
        pytest.skip(f"{path} path unavailable")
    _, mul_mat_vec, _ = paths[path]
    rng = np.random.default_rng(5)
    n, k = 70, 256
    signs = rng.integers(0, 2, size=(n, k), dtype=np.uint16) << 15
    bits = rng.integers(1, 0x400, size=(n, k), dtype=np.uint16) | signs
    raw = torch.from_numpy(bits.view(np.uint8).reshape(n, 2 * k).copy())
    w64 = torch.from_numpy(bits.view(np.float16).astype(np.float64))
    x = torch.randn(40, k).to("mps")
    for m in (40, 8, 1):
        got = mul_mat_vec(raw.to("mps"), x[:m], resolve("F16").id, n)
        assert _bound_ok("F16", got, w64, x[:m], raw=None if m > 8 else raw), f"M={m}"


@pytest.mark.parametrize("path", ["jit", "built"])
@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "Q6_K", "IQ4_XS", "MXFP4", "F16"])
def test_mul_mat_id_on_mps(name, path):
    paths = _paths()
    if path not in paths:
        pytest.skip(f"{path} path unavailable")
    _, mul_mat_vec, mul_mat_id = paths[path]
    qtype = resolve(name).id
    k, n, e = _k(name), 19, 4
    blocks = torch.stack([_weights(name, n, k, s)[0] for s in range(e)]).to("mps")
    x = torch.randn(3, k, dtype=torch.float16).to("mps")
    ids = torch.tensor([[3, 0], [1, -1], [4, 2]], device="mps")
    got = mul_mat_id(blocks, x, ids, qtype, n).cpu()
    for t in range(3):
        for u in range(2):
            i = int(ids[t, u])
            if 0 <= i < e:
                testing.assert_bits_equal(got[t, u], mul_mat_vec(blocks[i], x[t:t + 1], qtype, n)[0].cpu(),
                                          f"{name} slot {(t, u)}")
            else:
                assert torch.isnan(got[t, u]).all()
