"""The CPU AMX tier (contract v2; README "Compute on packed weights", cpu/amx_kernels.h): M > 8 rows of bfloat16 x
(linear, mul_mat_vec), on the factored types, on CPUs with AMX-TILE and AMX-BF16. One order for every M > 8, so
every row's bits are those of any slice of more than 8 rows holding it. TDPBF16PS's order of additions inside one instruction is not pinned (probed on this machine: no
simple sequential or pairwise float32 model matches it), so the checks are the bound against float64, batch
invariance across every M > 8, determinism across thread counts, bfloat16 subnormals, M <= 8 and ``mul_mat_id``
slots staying in the mat-vec tier, and the matrix tier's order again when ``GGUF_DEQUANT_CPU_ISA=avx512bf16`` caps
the build below AMX.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from gguf_dequant import reference, testing
from gguf_dequant.types import resolve

from .hub import hub_kernel
from .test_matvec_tier import (AMX, AMX_MATVEC_TYPES, AMX_TYPES, ROW_LIMIT,
                               assert_same_bits_across_threads, U, bound_v2, expected_matvec, model_matvec, packed,
                               subnormal_x)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


needs_amx = pytest.mark.skipif(not AMX, reason="the AMX tier needs AMX-BF16 (and no GGUF_DEQUANT_CPU_ISA)")


# The types of the parts order (cpu/amx_kernels.h amx::PartsTypes) and their bfloat16 parts per weight, and of
# the factored order (amx::FactoredTypes) and their bfloat16 parts per code c = a / d; Q8_0 takes the scaled
# order.
PARTS = {"Q4_0": 2, "Q4_1": 2, "Q5_0": 2, "Q5_1": 2, "IQ4_NL": 3, "MXFP4": 1, "NVFP4": 1, "Q1_0": 2, "Q2_0": 2}
FACTORED = {"Q2_K": 1, "Q3_K": 1, "Q4_K": 2, "Q5_K": 2, "Q6_K": 2, "IQ2_XXS": 2, "IQ2_XS": 2, "IQ3_XXS": 2,
            "IQ1_S": 1, "IQ3_S": 2, "IQ2_S": 2, "IQ4_XS": 2, "IQ1_M": 1, "TQ1_0": 1, "TQ2_0": 1}


def amx_n(name, K: int, bias: bool = False) -> int:
    """The type's AMX order's n. Scaled order: up to 31 roundings inside a chunk's TDPBF16PS, one per accumulation
    step after it (K / 32 chunks), 1 for the decoded weight's own rounding. Parts order: up to 32 inside a
    product's own TDPBF16PS, 2 in each later one (C enters once: test_parts_order_adds_c_once; P K / 32
    instructions, and for Q4_1, Q5_1 2 per step of 256 elements adding the offsets' products), 1 for the decoded
    weight, 5 in each sum of x (the offsets' X_g).
    Factored order: a block's C (8 P instructions: 32 + 16 P), then per
    block one fma by d and one fnmadd of the offsets (K / 256 blocks), 1 for the decoded weight; the offset sum O
    (up to 2 instructions: 34, 5 in each sum of x) stays below that."""
    name = resolve(name).name
    if name in FACTORED:
        n = 34 + 16 * FACTORED[name] + 2 * K // 256
    else:
        n = 34 + PARTS[name] * K // 16 if name in PARTS else 32 + K // 16
        if name in ("Q4_1", "Q5_1"):
            n += 4 + 4 * math.ceil(K / 256)
    return n + (1 if bias else 0)


def takes_amx(name, x: torch.Tensor) -> bool:
    """Whether a linear / mul_mat_vec call with this x takes the AMX tier's order here (M > 8 rows; also M <= 8 on
    the AMX mat-vec types, K > 0)."""
    name = resolve(name).name
    return AMX and x.dtype == torch.bfloat16 and (
        name in AMX_TYPES and x.shape[0] > ROW_LIMIT or name in AMX_MATVEC_TYPES and x.shape[-1] > 0)


def amx_result(x: torch.Tensor, blocks: torch.Tensor, name, bias=None):
    """For calls that take the AMX tier (else None): float32 (M, N) as linear computes it before its final rounding,
    from the kernel's own mul_mat_vec rows (one order for every M), checked here against the AMX bound. Tests
    that pin other tiers' bits (test_matmul.expected) use it for these calls."""
    if not takes_amx(name, x):
        return None
    rows = x.shape[0]
    if rows <= ROW_LIMIT:  # the AMX tier proper (more than 8 rows: zero rows added) for the mat-vec kernel's rows
        x = torch.cat([x, x.new_zeros(ROW_LIMIT + 1 - rows, x.shape[1])])
    y = hub_kernel().mul_mat_vec(blocks, x, resolve(name).id, blocks.shape[0])[:rows]
    x = x[:rows]
    check_bound(y, x, blocks, resolve(name).name, what="(amx_result)")
    y = y.numpy()
    return y if bias is None else (y + bias.float().numpy()).astype(np.float32)


def check_bound(y: torch.Tensor, x, blocks, name, bias=None, what=""):
    exact, mag, _ = bound_v2(x, blocks, name, bias)
    n = amx_n(name, x.shape[-1], bias is not None)
    c = n / (1 - n * U)
    err = np.abs(y.double().numpy() - exact)
    assert (err <= c * U * mag).all(), f"{name} {what}: {(err / mag).max() / U:.2f} u > {c:.2f} u"


@needs_amx
@pytest.mark.parametrize("name", AMX_TYPES)
def test_bound_every_tier_size(name):
    """M = 1, 3, 8 (the mat-vec tier, bit for bit its model or the AMX tier's rows), 9, 64, 1100 (the AMX tier) against float64 within the
    AMX bound (wider than the mat-vec tier's); K of one and of several blocks."""
    k = hub_kernel()
    gen = torch.Generator().manual_seed(resolve(name).id)
    for K in (resolve(name).block_elems, 1024):
        blocks = packed(name, 21, K, seed=K + 1)
        x = torch.randn(1100, K, generator=gen).to(torch.bfloat16)
        for M in (1, 3, 8, 9, 64, 1100):
            y = k.mul_mat_vec(blocks, x[:M], resolve(name).id, 21)
            check_bound(y, x[:M], blocks, name, what=f"K={K} M={M}")
            if M <= ROW_LIMIT:
                testing.assert_bits_equal(y, torch.from_numpy(expected_matvec(x[:M], blocks, name)), f"M={M}")


@needs_amx
@pytest.mark.parametrize("name", AMX_TYPES)
def test_bias_and_output_dtypes(name):
    """linear with a bias: float32 sum + bias, rounded once to bfloat16; within the bound before the rounding."""
    k = hub_kernel()
    K = 512
    blocks = packed(name, 35, K, seed=3)
    x = torch.randn(20, K, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    bias = torch.randn(35, generator=torch.Generator().manual_seed(6))
    y = k.mul_mat_vec(blocks, x, resolve(name).id, 35)
    yb = k.linear(x, blocks, name, bias.to(torch.bfloat16))
    testing.assert_bits_equal(yb, (y + bias.to(torch.bfloat16).float()).to(torch.bfloat16), f"{name} bias")
    check_bound(y + bias.to(torch.bfloat16).float(), x, blocks, name, bias.to(torch.bfloat16), "bias")


@needs_amx
@pytest.mark.parametrize("name", AMX_TYPES)
def test_batch_invariance_across_every_m(name):
    """A row's bits are the same in every slice of more than 8 rows, at any position (one order for every M > 8)."""
    k = hub_kernel()
    K = 512
    blocks = packed(name, 33, K, seed=9)
    x = torch.randn(70, K, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    full = k.mul_mat_vec(blocks, x, resolve(name).id, 33)
    for m in (9, 15, 16, 17, 33):
        for start in {0, 70 - m, (7 * m) % (71 - m)}:
            testing.assert_bits_equal(k.mul_mat_vec(blocks, x[start:start + m], resolve(name).id, 33),
                                      full[start:start + m], f"{name} rows {start}..{start + m}")
    perm = torch.randperm(70, generator=torch.Generator().manual_seed(0))
    testing.assert_bits_equal(k.mul_mat_vec(blocks, x[perm], resolve(name).id, 33), full[perm], "permuted rows")


@needs_amx
def test_determinism_across_runs_and_thread_counts():
    assert_same_bits_across_threads(("Q4_K", "Q6_K", "Q8_0", "Q4_0", "NVFP4"), 40)
    assert_same_bits_across_threads(AMX_MATVEC_TYPES, 5)  # the AMX mat-vec kernel


@needs_amx
@pytest.mark.parametrize("name", AMX_MATVEC_TYPES)
def test_matvec_rows_are_the_amx_tiers(name):
    """M = 1..8 rows of bfloat16 x on the AMX mat-vec types (cpu/amx_matvec.h) give the AMX tier's bits (12 rows),
    with a bias, for feature counts that leave a partial group and a one-group work item."""
    k = hub_kernel()
    gen = torch.Generator().manual_seed(8)
    for N, K in ((7, 32), (40, 96), (53, 2048)):
        blocks = packed(name, N, K, seed=N)
        x = torch.randn(12, K, generator=gen).to(torch.bfloat16)
        bias = torch.randn(N, generator=gen).to(torch.bfloat16)
        full = k.linear(x, blocks, name, bias)
        for M in range(1, ROW_LIMIT + 1):
            testing.assert_bits_equal(k.linear(x[:M], blocks, name, bias), full[:M], f"{name} N={N} K={K} M={M}")


@needs_amx
@pytest.mark.parametrize("name", ["Q8_0", "Q6_K", "Q4_0"])
def test_subnormal_activations_count_as_zero(name):
    """bfloat16 x below 2^-126 counts as zero in TDPBF16PS (types without offsets: no sum of x)."""
    k = hub_kernel()
    K = 256
    blocks = packed(name, 8, K, seed=12)
    x, tiny, sub = subnormal_x(20, K)
    xb = torch.where(tiny, sub, x).to(torch.bfloat16)
    zeroed = torch.where(tiny, torch.zeros_like(xb), xb)
    testing.assert_bits_equal(k.mul_mat_vec(blocks, xb, resolve(name).id, 8),
                              k.mul_mat_vec(blocks, zeroed, resolve(name).id, 8), "bf16 subnormals")


CAPPED_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from tests.hub import _load
from tests.test_matmul import model_linear
from tests.test_matvec_tier import packed
from gguf_dequant import reference, testing
from gguf_dequant.types import resolve
k, _ = _load()
for name in ("Q4_K", "Q6_K", "MXFP4"):
    blocks = packed(name, 19, 512, seed=2)
    x = torch.randn(12, 512, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    y = k.mul_mat_vec(blocks, x, resolve(name).id, 19)
    w = reference.dequantize(blocks, name)
    testing.assert_bits_equal(y, torch.from_numpy(model_linear(x, w)), name + " capped")
print("matrix order")
"""


@needs_amx
def test_capped_below_amx_takes_the_matrix_tier():
    """GGUF_DEQUANT_CPU_ISA=avx512bf16: 12 rows of bfloat16 x take the matrix tier again, bit for bit its model."""
    hub_kernel()
    env = dict(os.environ, GGUF_DEQUANT_CPU_ISA="avx512bf16")
    out = subprocess.run([sys.executable, "-c", CAPPED_SCRIPT.format(root=ROOT)], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "matrix order" in out.stdout


@needs_amx
def test_amx_differs_from_the_matvec_model_somewhere():
    """The AMX tier really runs (its bits are not the mat-vec tier's everywhere)."""
    k = hub_kernel()
    blocks = packed("Q8_0", 64, 2048, seed=1)
    x = torch.randn(12, 2048, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    y = k.mul_mat_vec(blocks, x, 8, 64).numpy()
    assert not np.array_equal(y.view(np.int32), model_matvec(x, blocks, "Q8_0").view(np.int32))
    assert math.isfinite(float(np.abs(y).max()))


@needs_amx
def test_parts_order_adds_c_once():
    """The parts order's bound rests on TDPBF16PS adding its accumulator C once to the instruction's sum of products
    (probed): with C = 1 from the first chunk, the second chunk's 32 products of 2^-25 (a quarter of C's ulp each)
    all count, y = 1 + 2^-20; adding them to C one at a time would round each away."""
    k = hub_kernel()
    t = resolve("MXFP4")
    blocks = np.zeros((16, 2, t.block_bytes), np.uint8)
    blocks[:, :, 0] = 127  # E8M0 scale 2^0, halved by the type's doubled codes
    blocks[:, 0, 1] = 0x02  # chunk 0: element 0 is code 2 (1.0), the rest 0
    blocks[:, 1, 1:] = 0x22  # chunk 1: every element 1.0
    blocks = torch.from_numpy(blocks.reshape(16, -1))
    w = reference.dequantize(blocks, "MXFP4")
    assert w[0, 0] == 1 and (w[0, 1:32] == 0).all() and (w[0, 32:] == 1).all()
    x = torch.zeros(12, 64)
    x[:, 0], x[:, 32:] = 1, 2.0 ** -25
    y = k.mul_mat_vec(blocks, x.to(torch.bfloat16), t.id, 16)
    assert (y == 1 + 2.0 ** -20).all(), y[0, :4]


@needs_amx
@pytest.mark.parametrize("name", ["Q4_0", "Q8_0"])
def test_k_zero_writes_zeros_and_bias(name):
    """K = 0 with more than 8 rows: zeros (+ bias) as in every tier. The AMX kernels have no chunk to run, so such
    calls leave them; before, the output stayed unwritten (stale memory: seen under ASan, whose allocator does not
    hand out zeroed memory). A freed buffer of NaN just before the call makes stale memory likely here too."""
    k = hub_kernel()
    blocks = torch.zeros(5, 0, dtype=torch.uint8)
    x = torch.zeros(12, 0, dtype=torch.bfloat16)
    bias = torch.randn(5, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    for b in (None, bias):
        stale = torch.full((12, 5), float("nan"), dtype=torch.bfloat16)
        del stale
        want = torch.zeros(12, 5, dtype=torch.bfloat16) if b is None else b.expand(12, 5)
        testing.assert_bits_equal(k.linear(x, blocks, name, b), want, f"{name} linear bias={b is not None}")
    stale = torch.full((12, 5), float("nan"))
    del stale
    testing.assert_bits_equal(k.mul_mat_vec(blocks, x, resolve(name).id, 5), torch.zeros(12, 5), f"{name} mul_mat_vec")


@needs_amx
@pytest.mark.parametrize("name", list(FACTORED))
def test_factored_zero_and_subnormal_block_scales(name):
    """The factored order divides each chunk scale by the block's d (and offsets by dmin): blocks whose d or dmin is
    0 contribute nothing (no 0 / 0), and float16-subnormal scales (1 / d up to 2^24) still give exact codes."""
    k = hub_kernel()
    t = resolve(name)
    N, K = 19, 1024
    raw = testing.random_blocks(name, N * K // t.block_elems, np.random.default_rng(t.id + 7)).copy()
    for i, (offset, kind) in enumerate(testing.SCALE_FIELDS[t.name]):
        if kind == "iq1m":
            words = raw[:, offset:offset + 8].view(np.uint16)
            words[0::3] &= 0x0FFF  # d = 0
            words[1::3] = (words[1::3] & 0x0FFF) | np.array([0x3000, 0x1000, 0, 0], np.uint16)  # d = 0x0013
            continue
        half = raw[:, offset:offset + 2].view(np.uint16)
        half[i::3] = 0  # d = 0 on blocks 0 mod 3, dmin = 0 on blocks 1 mod 3
        sub = (i + 1) % 3
        half[sub::3] = 0x8000 | (half[sub::3] & 0x03FF) | 1  # subnormal, nonzero
    blocks = torch.from_numpy(raw.reshape(N, -1))
    x = torch.randn(12, K, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    y = k.mul_mat_vec(blocks, x, t.id, N)
    assert torch.isfinite(y).all()
    check_bound(y, x, blocks, name, what="zero and subnormal scales")
