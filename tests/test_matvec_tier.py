"""The CPU mat-vec tier (contract v2; README "Compute on packed weights", cpu/matvec_kernels.h): M <= 8 rows of
``linear`` / ``mul_mat_vec`` and every ``mul_mat_id`` slot, on every quantized type in ``FACTORED``, on CPUs with
AVX512-BF16, AVX512-VBMI and BMI2 (elsewhere those calls take the matrix kernels, whose order
``test_matmul.model_linear`` pins).

Weights in factored form, per 32-element chunk: w = a * q (+ b for the offset types: per chunk, or per 16-element
sub-block for Q2_K). ``factors`` gets q, a and b from the scale fields (facts of the layouts) and the decoded values
of the blocks or of copies with an offset or scale field zeroed; ``model_matvec`` computes the tier's order in numpy,
exactly. On CPUs with AMX, M > 8 rows of bfloat16 x on the types in ``AMX_TYPES`` take the AMX tier
(tests/test_amx_tier.py) instead of the matrix tier, and so do M <= 8 rows of bfloat16 x on ``AMX_MATVEC_TYPES``
(checked bit for bit against the AMX tier's rows). Checked: bit
equality with that model, the bound ``|y - y_exact| <= c u B`` with ``B = sum_s (|a_s| sum |q x| + |b_s| sum |x|)``
and ``n = ceil(K / 16) + 9`` (+ 1 with a bias), batch invariance for M <= 8, determinism across runs and thread
counts, ``mul_mat_id`` slots, and subnormal activations (kept, in bfloat16 and float32 x).
"""

import math
import os

import numpy as np
import pytest
import torch

from gguf_dequant import reference, testing
from gguf_dequant.types import resolve

from .hub import hub_kernel

U = 2.0 ** -24
FACTORED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS",
            "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "IQ1_M", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0",
            "Q2_0"]
# cpu/amx_kernels.h amx::ScaledTypes, amx::PartsTypes, amx::FactoredTypes
AMX_TYPES = ["Q8_0",
             "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "MXFP4", "NVFP4", "Q1_0", "Q2_0",
             "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ3_S", "IQ2_S", "IQ4_XS",
             "IQ1_M", "TQ1_0", "TQ2_0"]
# cpu/amx_matvec.h amx_mv::AmxMatvecTypes: on AMX, M <= 8 rows of bfloat16 x take the AMX tier's order too
AMX_MATVEC_TYPES = ["MXFP4"]
ROW_LIMIT = 8  # MAX_GEMV_ROWS


def _cpu_flags() -> set:
    try:
        return set(open("/proc/cpuinfo").read().split())
    except OSError:
        return set()


def has_tier() -> bool:
    """The mat-vec tier runs here: AVX512-BF16, AVX512-VBMI, BMI2 and no instruction-set cap below it."""
    return {"avx512_bf16", "avx512vbmi", "bmi2"} <= _cpu_flags() and os.environ.get("GGUF_DEQUANT_CPU_ISA", "") in (
        "", "default", "avx512bf16")


def has_amx() -> bool:
    """The AMX tier (tests/test_amx_tier.py) takes M > 8 rows of bfloat16 x here: AMX-TILE, AMX-BF16, no cap."""
    return (has_tier() and {"amx_tile", "amx_bf16"} <= _cpu_flags()
            and os.environ.get("GGUF_DEQUANT_CPU_ISA", "") in ("", "default"))


TIER = has_tier()
AMX = has_amx()  # then M > 8 rows of bfloat16 x take the AMX tier (test_amx_tier.py)
needs_tier = pytest.mark.skipif(not TIER, reason="the mat-vec tier needs AVX512-BF16 (and no GGUF_DEQUANT_CPU_ISA)")


def uses_tier(name: str, rows: int | None) -> bool:
    """Whether a call takes the mat-vec tier: linear with ``rows`` rows, or mul_mat_id (rows None)."""
    return TIER and resolve(name).name in FACTORED and (rows is None or rows <= ROW_LIMIT)


def amx_matvec(name: str, x: torch.Tensor) -> bool:
    """Whether linear / mul_mat_vec on these M <= 8 rows of x take the AMX tier's order (cpu/amx_matvec.h)."""
    return (AMX and x.dtype == torch.bfloat16 and resolve(name).name in AMX_MATVEC_TYPES and x.shape[0] <= ROW_LIMIT
            and x.shape[-1] > 0)


def expected_matvec(x: torch.Tensor, blocks: torch.Tensor, name: str, bias=None) -> np.ndarray:
    """What linear / mul_mat_vec give for M <= 8 rows before the final rounding: model_matvec, or on the AMX
    mat-vec types the AMX tier's own rows (test_amx_tier.amx_result: the same order, run with more than 8 rows)."""
    from .test_amx_tier import amx_result

    amx = amx_result(x, blocks, name, bias)
    return model_matvec(x, blocks, name, bias) if amx is None else amx


def fma32(a, b, c):
    from .test_matmul import fma32 as f

    return f(np.asarray(a, np.float32), np.asarray(b, np.float32), np.asarray(c, np.float32))


def _half(raw: np.ndarray, offset: int) -> np.ndarray:
    return raw[:, offset:offset + 2].copy().view(np.float16)[:, 0].astype(np.float64)


def _u32(raw: np.ndarray, offset: int) -> np.ndarray:
    return raw[:, offset:offset + 4].copy().view("<u4")[:, 0].astype(np.int64)


def _iq_db(d: np.ndarray, ls: np.ndarray, scale: float) -> np.ndarray:
    """d * (0.5 + ls) * scale in float32, the decode functions' order."""
    return (d.astype(np.float32)[:, None] * (np.float32(0.5) + ls.astype(np.float32)) * np.float32(scale)).astype(
        np.float64)


# Where each offset type's offset field is (zeroed, the decoded values are a * q): Q4_1 / Q5_1's m, Q2_K's dmin.
OFFSET_FIELD = {"Q4_1": (2, 4), "Q5_1": (2, 4), "Q2_K": (82, 84)}


def _run_scales(raw: np.ndarray, name: str) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Per block: (scales of its runs, run length, offsets per run or None), from the fields (facts of the
    layouts, formats.md); w = scale * q + offset."""
    if name in ("Q4_0", "Q8_0", "Q5_0", "IQ4_NL"):
        return _half(raw, 0)[:, None], 32, None
    if name in ("Q4_1", "Q5_1"):
        return _half(raw, 0)[:, None], 32, _half(raw, 2)[:, None]
    if name == "MXFP4":
        return np.ldexp(1.0, raw[:, :1].astype(np.int64) - 128), 32, None
    if name == "Q1_0":
        return _half(raw, 0)[:, None], 128, None
    if name == "Q2_0":
        return _half(raw, 0)[:, None], 64, None
    if name == "TQ1_0":
        return _half(raw, 52)[:, None], 256, None
    if name in ("IQ1_S", "IQ1_M"):  # a = dl / 8 (codes 8 grid +- 1)
        if name == "IQ1_S":
            d = _half(raw, 0)
            h = raw[:, 34:50].copy().view("<u2").astype(np.int64)
            s = ((h >> 12) & 7)[:, :, None].repeat(2, axis=2).reshape(len(raw), 16)
        else:
            sc = raw[:, 48:56].copy().view("<u2").astype(np.int64)
            bits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
            d = bits.astype(np.uint16).view(np.float16).astype(np.float64)
            j = np.arange(16)
            s = (sc[:, j // 4] >> (3 * (j % 4))) & 7
        dl = d.astype(np.float32)[:, None] * (2 * s + 1).astype(np.float32)
        return dl.astype(np.float64) / 8, 16, None
    if name == "TQ2_0":
        return _half(raw, 64)[:, None], 256, None
    if name == "IQ4_XS":
        sh = raw[:, 2].astype(np.int64) | raw[:, 3].astype(np.int64) << 8
        sl = raw[:, 4:8].astype(np.int64)
        g = np.arange(8)
        ls = ((sl[:, g // 2] >> (4 * (g % 2))) & 0xF) | (((sh[:, None] >> (2 * g)) & 3) << 4)
        return _half(raw, 0)[:, None] * (ls - 32), 32, None
    if name == "Q6_K":
        return _half(raw, 208)[:, None] * raw[:, 192:208].view(np.int8), 16, None
    if name == "Q3_K":
        sc = raw[:, 96:108].astype(np.int64)
        i = np.arange(16)
        lo = np.where(i < 8, sc[:, i % 8] & 0xF, sc[:, i % 8] >> 4)
        hi = (sc[:, 8 + i % 4] >> (2 * (i // 4))) & 3
        return _half(raw, 108)[:, None] * ((lo | hi << 4) - 32), 16, None
    if name == "Q2_K":
        sc = raw[:, 0:16].astype(np.int64)
        return _half(raw, 80)[:, None] * (sc & 0xF), 16, -_half(raw, 82)[:, None] * (sc >> 4)
    if name == "IQ2_XXS":
        ls = np.stack([_u32(raw, 2 + 8 * g + 4) >> 28 for g in range(8)], axis=1)
        return _iq_db(_half(raw, 0), ls, 0.25), 32, None
    if name in ("IQ2_XS", "IQ2_S"):
        sc = raw[:, 66:74] if name == "IQ2_XS" else raw[:, 74:82]
        ls = np.stack([sc & 0xF, sc >> 4], axis=2).reshape(len(raw), 16)
        return _iq_db(_half(raw, 0), ls, 0.25), 16, None
    if name == "IQ3_XXS":
        ls = np.stack([_u32(raw, 66 + 4 * g) >> 28 for g in range(8)], axis=1)
        return _iq_db(_half(raw, 0), ls, 0.5), 32, None
    if name == "NVFP4":  # the decoded values with every code 2 (nibbles 0x2): 2 * scale
        twos = raw.copy()
        twos[:, 4:] = 0x22
        return reference.dequantize(torch.from_numpy(twos), name).double().numpy()[:, ::16] / 2, 16, None
    if name == "IQ3_S":
        s = (_u32(raw, 106)[:, None] >> (4 * np.arange(8))) & 0xF
        return (_half(raw, 0).astype(np.float32)[:, None] * (1 + 2 * s).astype(np.float32)).astype(np.float64), 32, None
    raise KeyError(name)


def factors(blocks: torch.Tensor, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(q, a, b) of (N, row_bytes) blocks: q and a per element (N, K), b per offset run (N, K / run) or None;
    w = a * q (+ b) exactly, w the decoded value (up to its one rounding for the offset types)."""
    t = resolve(name)
    n = blocks.shape[0]
    raw = blocks.numpy().reshape(-1, t.block_bytes)
    per_block = lambda v, elems: np.repeat(v.reshape(n, -1), elems, axis=1)  # noqa: E731
    if t.name in ("Q4_K", "Q5_K"):  # a from the codes set to 1 with dmin = 0, b from d = 0
        qs, qh = (16, None) if t.name == "Q4_K" else (48, (16, 48))
        ones = raw.copy()
        ones[:, 2:4] = 0
        ones[:, qs:qs + 128] = 0x11
        if qh:
            ones[:, qh[0]:qh[1]] = 0
        a = reference.dequantize(torch.from_numpy(ones.reshape(n, -1)), name).double().numpy()
        no_min = raw.copy()
        no_min[:, 2:4] = 0
        no_d = raw.copy()
        no_d[:, 0:2] = 0
        w_a = reference.dequantize(torch.from_numpy(no_min.reshape(n, -1)), name).double().numpy()
        b = reference.dequantize(torch.from_numpy(no_d.reshape(n, -1)), name).double().numpy()[:, ::32]
        q = np.divide(w_a, a, out=np.zeros_like(a), where=a != 0)
        return q, a, b
    scales, run, offsets = _run_scales(raw, t.name)
    a = per_block(scales, run)
    if offsets is None:
        w = reference.dequantize(blocks, name).double().numpy()
        b = None
    else:
        no_offset = raw.copy()
        lo, hi = OFFSET_FIELD[t.name]
        no_offset[:, lo:hi] = 0
        w = reference.dequantize(torch.from_numpy(no_offset.reshape(n, -1)), name).double().numpy()
        b = offsets.reshape(n, -1)
    q = np.divide(w, a, out=np.zeros_like(a), where=a != 0)
    return q, a, b


def tree(v: np.ndarray) -> np.ndarray:
    """float32 lanes of the last axis summed pairwise: lane i + lane i + h for h = half the width, ..., 1."""
    while v.shape[-1] > 1:
        h = v.shape[-1] // 2
        v = v[..., :h] + v[..., h:]
    return v[..., 0]


def model_matvec(x: torch.Tensor, blocks: torch.Tensor, name: str, bias: torch.Tensor | None = None) -> np.ndarray:
    """The mat-vec tier's order (cpu/matvec_kernels.h) in numpy: (M, K) x -> (M, N) float32."""
    q, a, b = factors(blocks, name)
    x = x.float().numpy()
    m, k = x.shape
    c = k // 32
    xc = x.reshape(m, 1, c, 32)
    w = (a * q).astype(np.float32).reshape(1, -1, c, 32)  # exact (test_every_byte_value)
    acc = np.zeros((m, w.shape[1], 16), np.float32)
    for g in range(c):
        acc = fma32(w[..., g, 1::2], xc[..., g, 1::2], fma32(w[..., g, 0::2], xc[..., g, 0::2], acc))
    y = tree(acc)
    if b is not None:  # runs of 32 elements (8 lanes) or 16 (Q2_K: 16 lanes)
        runs = b.shape[1]
        span, lanes = k // runs, 8 if k // runs == 32 else 16
        xr = x.reshape(m, runs, span)
        sums = tree(xr[..., :span // 2] + xr[..., span // 2:])  # (M, runs)
        ofs = np.zeros((m, w.shape[1], lanes), np.float32)
        for g in range(runs):
            ofs[..., g % lanes] = fma32(b[None, :, g].astype(np.float32), sums[:, None, g], ofs[..., g % lanes])
        y = y + tree(ofs)
    if bias is not None:
        y = y + bias.float().numpy()
    return y.astype(np.float32)


def bound_v2(x: torch.Tensor, blocks: torch.Tensor, name: str, bias=None):
    """(float64 result on the decoded weights, B of the factored form (+ |bias|), c = n / (1 - n u))."""
    q, a, b = factors(blocks, name)
    x64 = x.double().numpy()
    w = reference.dequantize(blocks, name).double().numpy()
    exact = x64 @ w.T
    mag = np.abs(x64) @ np.abs(a * q).T
    if b is not None:
        mag = mag + np.abs(x64) @ np.repeat(np.abs(b), x.shape[-1] // b.shape[1], axis=1).T
    n = math.ceil(x.shape[-1] / 16) + 9
    if amx_matvec(name, x):  # the AMX tier's n (test_amx_tier.amx_n)
        from .test_amx_tier import amx_n

        n = amx_n(name, x.shape[-1])
    if bias is not None:
        exact, mag, n = exact + bias.double().numpy(), mag + np.abs(bias.double().numpy()), n + 1
    return exact, mag, n / (1 - n * U)


def packed(name: str, n: int, k: int, seed: int):
    t = resolve(name)
    raw = testing.random_blocks(name, n * k // t.block_elems, np.random.default_rng(seed))
    return torch.from_numpy(raw.reshape(n, -1))


def k_values(name: str) -> list[int]:
    be = resolve(name).block_elems
    return [256, 512, 4096] if be == 256 else [be, 13 * be if be <= 64 else 3 * be, 2048]


@needs_tier
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("name", FACTORED)
def test_order_and_bound(name, dtype):
    """Bit equality with the model and the contract v2 bound, M = 1, 3, 8 (the tier), several K, with and
    without a bias; M = 9 and 64 take the matrix tier, inside its own bound (test_matmul.py)."""
    k = hub_kernel()
    gen = torch.Generator().manual_seed(resolve(name).id)
    for K in k_values(name):
        blocks = packed(name, 19, K, seed=K)
        for M in (1, 3, 8):
            x = torch.randn(M, K, generator=gen).to(dtype)
            y = k.mul_mat_vec(blocks, x, resolve(name).id, 19)
            testing.assert_bits_equal(y, torch.from_numpy(expected_matvec(x, blocks, name)), f"{name} K={K} M={M}")
            exact, mag, c = bound_v2(x, blocks, name)
            err = np.abs(y.double().numpy() - exact)
            assert (err <= c * U * mag).all(), f"{name} K={K}: {(err / mag).max() / U:.2f} u > {c:.2f} u"
        bias = torch.randn(19, generator=gen).to(dtype)
        yb = k.linear(x, blocks, name, bias)
        want = expected_matvec(x, blocks, name, bias)
        testing.assert_bits_equal(yb, torch.from_numpy(want).to(dtype), f"{name} K={K} + bias")
        exact, mag, c = bound_v2(x, blocks, name, bias)
        assert (np.abs(want.astype(np.float64) - exact) <= c * U * mag).all()


@needs_tier
@pytest.mark.parametrize("name", FACTORED)
def test_every_byte_value(name):
    """Codes and scales of every value of every block byte: 256 one-block rows, byte p of row j = (j + 97 p) mod
    256 (scale fields then made finite): every a * q exact in float32, the kernel against the model bit for bit
    and float64 within the bound."""
    from gguf_dequant.blocks import finite_scales

    k = hub_kernel()
    t = resolve(name)
    j, p = np.arange(256)[:, None], np.arange(t.block_bytes)[None, :]
    raw = finite_scales(((j + 97 * p) % 256).astype(np.uint8), t)
    blocks = torch.from_numpy(raw)
    q, a, _ = factors(blocks, name)
    assert (a * q == (a * q).astype(np.float32)).all(), "a * q must be exact in float32 (the tier's weights)"
    gen = torch.Generator().manual_seed(5)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(1, t.block_elems, generator=gen).to(dtype)
        y = k.mul_mat_vec(blocks, x, t.id, 256)
        testing.assert_bits_equal(y, torch.from_numpy(expected_matvec(x, blocks, name)), f"{name} {dtype}")
        exact, mag, c = bound_v2(x, blocks, name)
        assert (np.abs(y.double().numpy() - exact) <= c * U * mag).all()


@needs_tier
@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "MXFP4"])
def test_both_tiers_inside_their_bounds(name):
    """M = 1, 3, 8, 9, 64 against float64: the mat-vec tier within its bound, the matrix tier within its own."""
    from .test_matmul import bound

    k = hub_kernel()
    K = 1024
    blocks = packed(name, 24, K, seed=7)
    w = reference.dequantize(blocks, name)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(64, K, generator=torch.Generator().manual_seed(3)).to(dtype)
        for M in (1, 3, 8, 9, 64):
            y = k.mul_mat_vec(blocks, x[:M], resolve(name).id, 24).double().numpy()
            if M <= ROW_LIMIT:
                exact, mag, c = bound_v2(x[:M], blocks, name)
            elif AMX and dtype == torch.bfloat16 and name in AMX_TYPES:  # the AMX tier (test_amx_tier.py)
                from .test_amx_tier import amx_n

                exact, mag, _ = bound_v2(x[:M], blocks, name)
                c = amx_n(name, K) / (1 - amx_n(name, K) * U)
            else:
                exact, mag, c = bound(x[:M], w)
                exact, mag = exact.numpy(), mag.numpy()
            err = np.abs(y - exact)
            assert (err <= c * U * mag).all(), f"{name} M={M} {dtype}: {(err / mag).max() / U:.2f} u > {c:.2f} u"


@needs_tier
@pytest.mark.parametrize("name", FACTORED)
def test_batch_invariance_within_the_tier(name):
    k = hub_kernel()
    K = 512
    blocks = packed(name, 33, K, seed=9)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(8, K, generator=torch.Generator().manual_seed(1)).to(dtype)
        full = k.linear(x, blocks, name)
        for m in range(1, 9):
            for start in {0, 8 - m, (3 * m) % (9 - m)}:
                testing.assert_bits_equal(k.linear(x[start:start + m], blocks, name), full[start:start + m],
                                          f"{name} rows {start}..{start + m}")
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
        testing.assert_bits_equal(k.linear(x[perm], blocks, name), full[perm], "permuted rows")


def subnormal_x(rows: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 x (rows, k) from torch's global generator, a mask of every third column, and values for the masked
    places in [2^-130, 2^-127): subnormal in float32 and in bfloat16 (checked), and nonzero."""
    x = torch.randn(rows, k)
    tiny = torch.zeros(rows, k, dtype=torch.bool)
    tiny[:, ::3] = True
    sub = x.sign() * (1 + x.abs() % 7) * 2.0 ** -130
    for dtype in (torch.float32, torch.bfloat16):
        v = sub[tiny].to(dtype).float()
        assert (v != 0).all() and (v.abs() < 2.0 ** -126).all(), dtype
    return x, tiny, sub


def assert_same_bits_across_threads(names, rows: int) -> None:
    """linear on ``rows`` rows of bfloat16 x gives the same bits on 1 and 2 threads, run after run."""
    k = hub_kernel()
    before = torch.get_num_threads()
    try:
        for name in names:
            blocks = packed(name, 300, 1024, seed=4)
            x = torch.randn(rows, 1024).to(torch.bfloat16)
            results = []
            for threads in (1, 2, 1, 2):
                torch.set_num_threads(threads)
                results.append(k.linear(x, blocks, name))
            for r in results[1:]:
                testing.assert_bits_equal(r, results[0], f"{name} threads")
    finally:
        torch.set_num_threads(before)


@needs_tier
def test_determinism_across_runs_and_thread_counts():
    assert_same_bits_across_threads(("Q4_K", "IQ4_XS"), 5)


@needs_tier
@pytest.mark.parametrize("name", ["Q4_K", "Q8_0", "Q6_K"])
def test_mul_mat_id_slots_follow_the_tier(name):
    """Every slot takes the mat-vec order, whatever the number of slots routed to its expert (more than 8, and
    more than 16: the AMX tier's thresholds)."""
    k = hub_kernel()
    E, N, K, T, Uu = 4, 20, 256, 24, 3
    t = resolve(name)
    raw = testing.random_blocks(name, E * N * K // t.block_elems, np.random.default_rng(11))
    blocks = torch.from_numpy(raw.reshape(E, N, -1))
    x = torch.randn(T, K).to(torch.bfloat16)
    ids = torch.zeros(T, Uu, dtype=torch.int32)
    ids[:, 1:] = torch.randint(0, E, (T, Uu - 1), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    y = k.mul_mat_id(blocks, x, ids, name, N)  # expert 0 gets every token's first slot
    for tt in range(T):
        for u in range(Uu):
            want = model_matvec(x[tt:tt + 1], blocks[ids[tt, u]], name)[0]
            testing.assert_bits_equal(y[tt, u], torch.from_numpy(want), f"slot {tt},{u}")
    alone = k.mul_mat_id(blocks, x[4:5], ids[4:5], name, N)
    testing.assert_bits_equal(alone[0], y[4], "token alone")


@needs_tier
@pytest.mark.parametrize("name", ["Q8_0", "Q4_K"])
def test_subnormal_activations(name):
    """Subnormal x (float32, and bfloat16 below 2^-126) keeps its value: float32 FMAs, no flushing."""
    k = hub_kernel()
    K = 256
    blocks = packed(name, 8, K, seed=12)
    x, tiny, sub = subnormal_x(2, K)
    for xs in (torch.where(tiny, sub, torch.zeros_like(x)), torch.where(tiny, sub, x).to(torch.bfloat16)):
        y = k.mul_mat_vec(blocks, xs, resolve(name).id, 8)
        testing.assert_bits_equal(y, torch.from_numpy(model_matvec(xs, blocks, name)), f"{xs.dtype} subnormals")
    only = torch.where(tiny, sub, torch.zeros_like(x))
    assert (k.mul_mat_vec(blocks, only, resolve(name).id, 8) != 0).any(), "subnormal x alone gives a nonzero result"
