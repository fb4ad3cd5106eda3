"""Metal compute on packed weights (metal/gguf_matmul.h) in the Linux harness: every kernel of every type,
bit for bit against a numpy model of its tier's summation order (the mat-vec tier: the factored order or an
fma chain per lane over its sub-blocks, then the kernel's own butterfly over the lanes, the same bits under every
simd_sum order the harness offers; the matrix tier: one 8 x 8 x 8
simdgroup multiply-accumulate per 8 elements of K in the pinned matrix order; then the bias, then one
rounding), under forward and reverse schedules with poisoned threadgroup memory; the error bound against
float64; batch invariance within each tier and mul_mat_id slot invariance.

The kernels run from one library: the run-time Metal path's single source (every metal/*.metal file with
the headers inlined, ``metal_jit.source(matmul=True)``), the union of what torch.mps.compile_shader compiles
per type. Each harness library that synchronises holds its own pool of fiber stacks (about 2,000 memory
mappings), so one library for all types keeps a test process far from the kernel's mapping limit;
``test_per_file_libraries_give_the_same_bits`` runs the per-file libraries (kernel-builder's compile
units) of a few types, and tests/test_msl.py compiles and lints every file."""

import functools
import hashlib
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_dequant import launch, metal_jit, reference, testing
from gguf_dequant.types import BY_NAME
from harness import msl_harness, msl_lint

from .conftest import ALL_TYPES

pytestmark = [pytest.mark.msl,
              pytest.mark.skipif(not msl_harness.available(), reason="clang-19 is not installed")]

ROOT = Path(__file__).resolve().parents[1]
U32 = 2.0 ** -24
SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
NP_OUT = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}
# (activation dtype, output dtype) pairs the kernels are instantiated for.
MIXED = [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
         (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16)]


# ---- the numpy model of the kernels' order ------------------------------------------------------------

def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fma(a, b, c), correctly rounded: the product is exact in float64, the sum is rounded to odd
    in float64 (TwoSum error term), then to float32 -- no double-rounding error."""
    a64, b64, c64 = (np.asarray(v, np.float64) for v in (a, b, c))
    p = a64 * b64
    with np.errstate(over="ignore", invalid="ignore"):
        s = p + c64
        bv = s - p
        err = (p - (s - bv)) + (c64 - bv)
        even = (s.view(np.uint64) & 1) == 0
        nudge = even & (err != 0) & np.isfinite(err)
        s = np.where(nudge, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


def lane_partials(w: np.ndarray, x: np.ndarray, sub: int) -> np.ndarray:
    """(M, N, 32) float32: lane l's fma chain over sub-blocks l, l + 32, ... of each row pair."""
    n, k = w.shape
    acc = np.zeros((x.shape[0], n, launch.SIMD_WIDTH), np.float32)
    lanes = np.arange(launch.SIMD_WIDTH)
    n_sub = -(-k // sub)
    for stripe in range(-(-n_sub // launch.SIMD_WIDTH)):
        for j in range(sub):
            cols = (stripe * launch.SIMD_WIDTH + lanes) * sub + j
            live = cols < k
            if live.any():
                c = cols[live]
                acc[:, :, live] = fma32(w[None, :, c], x[:, None, c], acc[:, :, live])
    return acc


def butterfly(v: np.ndarray) -> np.ndarray:
    """The mat-vec tier's sum over the last axis (32 lanes; gguf_butterfly): lane l + lane l + 16, then those
    sums at distance 8, 4, 2, 1."""
    while v.shape[-1] > 1:
        h = v.shape[-1] // 2
        v = v[..., :h] + v[..., h:]
    return v[..., 0]


def model(w, x, sub, bias=None) -> np.ndarray:
    """float32 (M, N): the decode-exact order of the mat-vec tier for x (M, K) against decoded weights
    w (N, K)."""
    y = butterfly(lane_partials(w, x, sub))
    return y if bias is None else (y + bias[None, :]).astype(np.float32)


def model_mm(w, x, bias=None, mma_order="fma") -> np.ndarray:
    """float32 (M, N): what the matrix tier (mul_mm, mul_mm_id) computes: K padded with zeros to a multiple of
    MM_K, one 8 x 8 x 8 multiply-accumulate per 8 elements in increasing k, each in the harness's ``mma_order``
    (fma: acc = fma(x_t, w_t, acc) for t = 0..7; sequential: acc + x_t * w_t, the product rounded; pairwise:
    acc + the 8 products summed as a balanced tree), from acc = +0; then the bias."""
    n, k = w.shape
    m = x.shape[0]
    kp = -(-k // launch.MM_K) * launch.MM_K
    wp = np.zeros((n, kp), np.float32)
    xp = np.zeros((m, kp), np.float32)
    wp[:, :k], xp[:, :k] = w, x
    acc = np.zeros((m, n), np.float32)
    for k8 in range(0, kp, 8):
        a = np.broadcast_to(xp[:, None, k8:k8 + 8], (m, n, 8))
        b = np.broadcast_to(wp[None, :, k8:k8 + 8], (m, n, 8))
        if mma_order == "fma":
            for t in range(8):
                acc = fma32(a[..., t], b[..., t], acc)
        elif mma_order == "sequential":
            for t in range(8):
                acc = acc + a[..., t] * b[..., t]
        elif mma_order == "pairwise":
            p = a * b
            acc = acc + (((p[..., 0] + p[..., 1]) + (p[..., 2] + p[..., 3]))
                         + ((p[..., 4] + p[..., 5]) + (p[..., 6] + p[..., 7])))
        else:
            raise ValueError(mma_order)
    return acc if bias is None else (acc + bias[None, :]).astype(np.float32)


# ---- the factored order of the mat-vec tier (launch.MV_FACTORED) -------------------------------------------

# Where quad j of part p sits in a block: the model's copy of each type's gguf_mv_quad.
MV_QUADS = {
    "Q4_0": lambda p, j: 16 * j + 4 * p,
    "Q8_0": lambda p, j: 4 * p,
    "MXFP4": lambda p, j: 16 * j + 4 * p,
    "Q4_K": lambda p, j: 64 * (p // 4) + 16 * j + 4 * (p % 4),
    "Q5_K": lambda p, j: 64 * (p // 4) + 16 * j + 4 * (p % 4),
    "Q6_K": lambda p, j: 64 * j + 4 * p,
    "IQ4_XS": lambda p, j: 64 * (p // 4) + 16 * j + 4 * (p % 4),
    "IQ2_XXS": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "IQ3_XXS": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "IQ2_XS": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "IQ2_S": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "IQ3_S": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "IQ1_S": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "IQ1_M": lambda p, j: 128 * (j // 2) + 8 * p + 4 * (j % 2),
    "Q2_K": lambda p, j: 64 * j + 4 * p,
    "Q3_K": lambda p, j: 64 * j + 4 * p,
    "Q4_1": lambda p, j: 4 * p,
    "Q5_0": lambda p, j: 4 * p,
    "Q5_1": lambda p, j: 4 * p,
    "IQ4_NL": lambda p, j: 4 * p,
    "NVFP4": lambda p, j: 16 * (p // 2) + 8 * j + 4 * (p % 2),
    "Q1_0": lambda p, j: 32 * j + 4 * p,
    "Q2_0": lambda p, j: 32 * j + 4 * p,
    "TQ1_0": lambda p, j: 32 * j + 4 * p,
    "TQ2_0": lambda p, j: 64 * j + 4 * p,
}


def factored_model(name, raw, x, bias=None) -> np.ndarray:
    """float32 (M, N): the mat-vec tier's factored order (launch.MV_FACTORED) for x (M, K) against the raw
    weight rows (N, bytes_per_row)."""
    parts, quads, runs, offset = launch.MV_FACTORED[name]
    qk = BY_NAME[name].block_elems
    q, a, o = testing.factored_codes(name, raw)
    x = np.asarray(x, np.float32)
    nb = q.shape[1] // qk
    lanes = np.arange(launch.SIMD_WIDTH)
    part, step = lanes % parts, launch.SIMD_WIDTH // parts
    acc = np.zeros((x.shape[0], q.shape[0], launch.SIMD_WIDTH), np.float32)
    per_run = quads // runs
    if offset:  # the decoded weights, fl(a q + o), one fma per element
        w = fma32(a, q, o)
    for s in range(-(-nb // step)):
        ib = lanes // parts + s * step
        live = ib < nb
        ib = np.where(live, ib, 0)
        for u in range(runs):
            new = acc
            dq = np.zeros_like(acc)
            for j in range(u * per_run, (u + 1) * per_run):
                for i in range(4):
                    e = ib * qk + MV_QUADS[name](part, j) + i
                    if offset:
                        new = fma32(w[None, :, e], x[:, None, e], new)
                    else:
                        dq = fma32(q[None, :, e], x[:, None, e], dq)
            if not offset:
                e0 = ib * qk + MV_QUADS[name](part, u * per_run)
                new = fma32(a[None, :, e0], dq, acc)
            acc = np.where(live, new, acc)
    y = butterfly(acc)
    return y if bias is None else (y + bias[None, :]).astype(np.float32)


def matrix_tier(kind: str) -> bool:
    """Whether kernel kind (mv, mm, mv_id, mm_id) belongs to the matrix tier."""
    return kind in ("mm", "mm_id")


def factored(name: str, kind: str) -> bool:
    """Whether kernel kind computes type ``name`` in the factored order."""
    return name in launch.MV_FACTORED and not matrix_tier(kind)


def kernel_model(name, kind, raw, w, x, bias=None, mma_order="fma") -> np.ndarray:
    """What kernel ``kind`` computes: the matrix tier's multiply-accumulate order (mm, mm_id); in the mat-vec
    tier the factored order (MV_FACTORED types), else the decode-exact order of ``model`` (the float types
    with sub-blocks of MV_FLOAT_SUB)."""
    if matrix_tier(kind):
        return model_mm(w, x, bias, mma_order)
    if factored(name, kind):
        return factored_model(name, raw, x, bias)
    if BY_NAME[name].block_elems == 1:
        return model(w, x, launch.MV_FLOAT_SUB, bias)
    return model(w, x, launch.matmul_sub_elems(name), bias)


def test_matrix_tier_reads_factored_tiles_only_where_the_layout_allows():
    """gguf_mm_weights reads a step's quads as consecutive quads of consecutive parts: launch.MM_FACTORED holds
    exactly the factored types that stage no table and whose quad j of part p is element 4 (PG QUADS (p / PG) +
    PG j + p % PG), PG = launch.MM_PART_GROUP.get(type, PARTS)."""
    def fits(name, parts, quads):
        pg = launch.MM_PART_GROUP.get(name, parts)
        return all(MV_QUADS[name](p, j) == 4 * (pg * quads * (p // pg) + pg * j + p % pg)
                   for p in range(parts) for j in range(quads))

    assert launch.MM_FACTORED == {name for name, (parts, quads, _, _) in launch.MV_FACTORED.items()
                                  if fits(name, parts, quads) and not name.startswith(("IQ1", "IQ2", "IQ3"))}


@pytest.mark.parametrize("name", list(launch.MV_FACTORED))
def test_factored_codes_are_the_decoded_weights(name):
    """The factored form against dequantize for every value of every byte of a block (the other bytes
    random, half fields any bits, NaN and infinities included): a q is exact and fl(a q + o) is the decoded
    weight bit for bit (with o = 0: a q itself)."""
    t = BY_NAME[name]
    rng = np.random.default_rng(29)
    raw = rng.integers(0, 256, size=(t.block_bytes, 256, t.block_bytes), dtype=np.uint8)
    raw[np.arange(t.block_bytes), :, np.arange(t.block_bytes)] = np.arange(256, dtype=np.uint8)
    raw = raw.reshape(-1, t.block_bytes)
    decoded = reference.dequantize(torch.from_numpy(raw.copy()), name, torch.float32).numpy()
    q, a, o = testing.factored_codes(name, raw)
    if name != "MXFP4":  # its codes carry 2^-64 in blocks with a subnormal scale
        assert np.array_equal(q, np.round(q)) and np.abs(q).max() <= 128
    with np.errstate(invalid="ignore", over="ignore"):
        product = a * q
        # (an infinite product is MXFP4's scale 2^127 overflowing, as dequantize's does: compared below)
        exact = ~np.isfinite(product) | (product.astype(np.float64) == a.astype(np.float64) * q)
        assert exact.all(), f"{name}: a q not exact for {int((~exact).sum())} elements"
        weight = product + o if launch.MV_FACTORED[name][3] else product
        testing.assert_bits_equal(torch.from_numpy(weight), torch.from_numpy(decoded.reshape(q.shape)),
                                  f"{name}: fl(a q + o) vs dequantize")


@pytest.mark.parametrize("name", list(launch.MV_FACTORED))
def test_factored_kernels_give_the_decoded_weights(name):
    """The kernels' own factored access (gguf_mv_codes, gguf_mv_quad) against dequantize: mul_mv with x the
    identity matrix returns every weight (one term a q + o, rounded once; the other runs add zeros) for
    blocks in which every byte takes every value (half scales kept finite: an infinite scale times the
    zeros of x would be NaN), bit for bit up to the sign of zeros."""
    t = BY_NAME[name]
    raw = ((np.arange(256)[:, None] + 37 * np.arange(t.block_bytes)[None, :]) % 256).astype(np.uint8)
    for offset, kind in testing.SCALE_FIELDS[name]:
        if kind == "f16":  # exponent 31 (inf, NaN) -> 30
            high = raw[:, offset + 1]
            high[(high & 0x7C) == 0x7C] ^= 0x04
    decoded = reference.dequantize(torch.from_numpy(raw.copy()), name, torch.float32).numpy()
    eye = torch.eye(t.block_elems, dtype=torch.float32)
    got = run_linear(name, raw, eye, kind="mv").numpy().T  # (blocks, elements)
    testing.assert_bits_equal(torch.from_numpy(got + np.float32(0)), torch.from_numpy(decoded + np.float32(0)),
                              f"{name}: mul_mv(identity) vs dequantize")


def test_mxfp4_subnormal_scales_in_each_row_of_a_step():
    """MXFP4's mat-vec exponents are decoded once per step for the simdgroup's weight rows (lane p of a block
    reads rows p, p + 4 and hands the scales out by simd_shuffle) and one vote per step rescales the codes of
    blocks with E8M0 0 or 1 (subnormal scales). Here such blocks sit in one row of a step, in rows 0-3 or in rows
    4-7 only (the second exponent of a lane), and every exponent differs by row: the bits equal the order
    model at M = 1 (4 rows per simdgroup), 3 and 8 (8 rows), and the weights are the decoded ones."""
    rng = np.random.default_rng(43)
    n, nb = 16, 24  # two simdgroups of 8 rows (4 at M = 1); three steps of 8 blocks
    raw = rng.integers(0, 256, size=(n, nb, 17), dtype=np.uint8)
    raw[:, :, 0] = rng.integers(2, 9, size=(n, nb))  # small normal scales: comparable terms in every sum
    for row, block, e in ((5, 3, 0), (2, 9, 1), (14, 9, 0), (7, 17, 1), (1, 18, 0), (12, 20, 1)):
        raw[row, block, 0] = e
    raw = raw.reshape(n, nb * 17)
    k = 32 * nb
    w = reference.dequantize(torch.from_numpy(raw.copy()), "MXFP4", torch.float32).numpy()
    x = activations(8, k, torch.float32, rng) * 2.0**100  # keeps the products of 2^-64 codes normal
    for m in (1, 3, 8):
        got = run_linear("MXFP4", raw, x[:m], kind="mv")
        testing.assert_bits_equal(got, torch.from_numpy(factored_model("MXFP4", raw, x[:m].numpy())),
                                  f"MXFP4 M={m}")
        assert_within_bound("MXFP4", got.numpy(), w, x[:m].numpy(), kind="mv")


def _round_exact(value: Fraction) -> np.float32:
    """The float32 nearest to an exact rational, ties to even (finite results only)."""
    f = np.float32(float(value))
    candidates = [f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))]
    return min((c for c in candidates if np.isfinite(c)),
               key=lambda c: (abs(Fraction(float(c)) - value), int(np.array(c).view(np.uint32)) & 1))


_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-2.0**60, max_value=2.0**60)


@settings(max_examples=300)
@given(a=_f32, b=_f32, c=_f32, near=st.booleans())
def test_model_fma_is_correctly_rounded(a, b, c, near):
    """The model's fma against exact rational arithmetic (``near``: c cancels most of a*b)."""
    if near:
        c = float(np.float32(-(a * b)))
    want = _round_exact(Fraction(a) * Fraction(b) + Fraction(c))
    got = fma32(np.float32([a]), np.float32([b]), np.float32([c]))[0]
    assert np.array(got).view(np.uint32) == np.array(want).view(np.uint32) or (got == 0 and want == 0)


# ---- data and launches --------------------------------------------------------------------------------

def k_values(name: str) -> tuple[int, int]:
    """A small K (one block, fewer sub-blocks than lanes) and a larger K whose last stripe of 32
    sub-blocks is partial (the float types: a short last sub-block too)."""
    t = BY_NAME[name]
    if t.block_elems == 1:
        return 5, 1031
    sub = launch.matmul_sub_elems(name)
    n_blocks = 1
    while (n_blocks * t.block_elems) < 1100 or (n_blocks * t.block_elems // sub) % launch.SIMD_WIDTH == 0:
        n_blocks += 1
    return t.block_elems, n_blocks * t.block_elems


def weights(name: str, n: int, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(raw (N, bytes_per_row) uint8 with finite scales, decoded float32 (N, K) from the reference)."""
    t = BY_NAME[name]
    nb = k // t.block_elems
    raw = testing.random_blocks(name, n * nb, rng).reshape(n, nb * t.block_bytes)
    w = reference.dequantize(torch.from_numpy(raw.copy()), name, torch.float32).numpy()
    assert w.shape == (n, k)
    return raw, w


def activations(m: int, k: int, dtype, rng) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).to(dtype)


def _out_tensor(arr: np.ndarray, dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr).copy())
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


@functools.cache
def single_source() -> Path:
    """The run-time path's matmul source as a file, named by content (.cache may be shared by checkouts)."""
    src = metal_jit.source(matmul=True)
    path = ROOT / ".cache" / "jit" / f"gguf_dequant_jit-{hashlib.sha256(src.encode()).hexdigest()[:16]}.metal"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(src)
        os.replace(tmp, path)
    return path


def run_linear(name, raw, x, bias=None, out_dtype=None, kind=None, path=None, ftz=False, ubsan=False,
               **opts) -> torch.Tensor:
    """One launch of mul_mv / mul_mm as launch.matmul_grid describes it; asserts every output was written.
    ``path``: a .metal file (default: the single source); ``ftz``: the harness build that flushes subnormals
    like Metal's fast math may; ``ubsan``: with UBSan."""
    out_dtype = out_dtype or x.dtype
    m, k = x.shape
    n = raw.shape[0]
    kind, groups, group = launch.matmul_grid(m, n, kind, qtype=name)
    lib = msl_harness.compile(path or single_source(), ftz=ftz, ubsan=ubsan)
    host = f"mul_{kind}_{name.lower()}_{SUFFIX[x.dtype]}_{SUFFIX[out_dtype]}"
    out = np.empty((m, n), NP_OUT[out_dtype])
    b = np.zeros(1, np.float32) if bias is None else bias
    res = lib.dispatch_threadgroups(
        host, [raw.reshape(-1), x.contiguous(), b, out, np.uint64(k), np.uint64(n), np.uint64(m),
               np.uint64(bias is not None)], groups, group, **opts)
    assert res.unwritten.get(3, 0) == 0, f"{host}: {res.unwritten[3]} outputs never written"
    return _out_tensor(res.buffers[3].view(NP_OUT[out_dtype]).reshape(m, n), out_dtype)


def run_mul_mat_id(name, raw3, x3, ids, kind=None, path=None, ubsan=False, **opts) -> np.ndarray:
    """mul_mv_id, or mul_mm_id_map then mul_mm_id, as launch.mul_mat_id_grid and mul_mat_id_map_grid
    describe them; asserts every output was written (the map launch writes the NaN rows of bad ids)."""
    n_exp, n, _ = raw3.shape
    n_tok, n_used = ids.shape
    k = x3.shape[-1]
    kind, groups, group = launch.mul_mat_id_grid(n_tok, n_used, n, n_exp, kind)
    lib = msl_harness.compile(path or single_source(), ubsan=ubsan)
    host = f"mul_{kind}_{name.lower()}_{SUFFIX[x3.dtype]}"
    out = np.empty((n_tok, n_used, n), np.float32)
    buffers = [raw3.reshape(-1), x3.contiguous(), ids.astype(np.int32), out]
    scalars = [k, n, n_exp, n_used, x3.shape[1]]
    if kind == "mv_id":
        res = lib.dispatch_threadgroups(host, buffers + [*map(np.uint64, scalars)], groups, group, **opts)
        assert res.unwritten.get(3, 0) == 0, f"{host}: {res.unwritten[3]} outputs never written"
        return res.buffers[3].view(np.float32).reshape(n_tok, n_used, n)
    map_groups, map_group, words = launch.mul_mat_id_map_grid(n_tok, n_used, n_exp)
    buffers += [np.empty(words, np.uint32), *map(np.uint64, scalars + [n_tok * n_used])]
    first = lib.dispatch_threadgroups(f"mul_mm_id_map_{name.lower()}", buffers, map_groups, map_group, **opts)
    buffers[3], buffers[4] = first.buffers[3], first.buffers[4]  # the NaN rows, the map
    res = lib.dispatch_threadgroups(host, buffers, groups, group, inout=[3], **opts)
    got = res.buffers[3].view(np.float32).reshape(n_tok, n_used, n)
    unwritten = int((got.view(np.uint32) == 0xFFFFFFFF).sum())  # the first launch's poison
    assert unwritten == 0, f"{host}: {unwritten} outputs never written"
    return got


def assert_within_bound(name, y, w, x, bias=None, kind="mm"):
    """|y - y_exact| <= gamma_n * (B + |bias|), y_exact in float64 from the decoded weights w, n =
    launch.matmul_error_constant of the kernel's tier, B = sum |w x| (the factored order without an offset
    sums a q = w exactly: test_factored_codes_are_the_decoded_weights)."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    exact = x64 @ w64.T
    scale = np.abs(x64) @ np.abs(w64).T
    c = launch.matmul_error_constant(name, w.shape[1], bias is not None, "mm" if matrix_tier(kind) else "mv")
    if bias is not None:
        exact = exact + bias.astype(np.float64)
        scale = scale + np.abs(bias.astype(np.float64))
    gamma = c * U32 / (1 - c * U32)
    err = np.abs(np.asarray(y, np.float64) - exact)
    bad = err > gamma * scale
    assert not bad.any(), (f"{name}: {int(bad.sum())} outputs exceed the bound n = {c}; worst ratio "
                           f"{float((err / np.maximum(scale, 1e-300)).max() / U32):.2f} u")


# ---- every kernel, every type: bits against the model ------------------------------------------------

@pytest.mark.parametrize("name", ALL_TYPES)
def test_kernels_match_model(name):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    k_small, k_large = k_values(name)
    n = 7  # odd: a partial simdgroup and a partial threadgroup of weight rows
    for k, shapes in ((k_small, ((1, "mv"), (8, "mv"), (9, "mm"))),
                      (k_large, ((1, "mv"), (2, "mv"), (5, "mv"), (8, "mv"), (37, "mm"), (3, "mm")))):
        raw, w = weights(name, n, k, rng)
        x = activations(max(m for m, _ in shapes), k, torch.float32, rng)
        bias = rng.standard_normal(n).astype(np.float32)
        for m, kind in shapes:
            xm = x[:m]
            b = bias if m in (5, 37) else None
            want = kernel_model(name, kind, raw, w, xm.numpy(), b)
            schedules = ("forward", "reverse") if m in (5, 37) else ("forward",)
            for schedule in schedules:
                # check_uninitialized: no read of threadgroup memory that no thread wrote.
                got = run_linear(name, raw, xm, b, kind=kind, schedule=schedule, check_uninitialized=True)
                testing.assert_bits_equal(got, torch.from_numpy(want), f"{name} {kind} M={m} K={k} {schedule}")
            assert_within_bound(name, got.numpy(), w, xm.numpy(), b, kind)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_activation_and_output_dtypes(name):
    """f16/bf16 activations read natively (exact widening), output float32 or the activation dtype rounded
    once from the float32 result; within the bound for every activation dtype at M = 1, 3, 8 (mat-vec tier)
    and 11 (mul_mm)."""
    rng = np.random.default_rng(abs(hash(name) + 1) % 2**32)
    k = k_values(name)[1]
    n = 5
    raw, w = weights(name, n, k, rng)
    bias = rng.standard_normal(n).astype(np.float32)
    for x_dtype, out_dtype in [(torch.float32, torch.float32), *MIXED]:
        for m, kind in ((1, "mv"), (3, "mv"), (8, "mv"), (11, "mm")):
            if out_dtype != torch.float32 and m in (1, 8):
                continue
            x = activations(m, k, x_dtype, rng)
            want32 = kernel_model(name, kind, raw, w, x.float().numpy(), bias)
            got = run_linear(name, raw, x, bias, out_dtype, kind=kind)
            testing.assert_bits_equal(got, testing.round_to(torch.from_numpy(want32), out_dtype),
                                      f"{name} {kind} M={m} {x_dtype} -> {out_dtype}")
            if out_dtype == torch.float32:
                assert_within_bound(name, got.numpy(), w, x.float().numpy(), bias, kind)


@settings(max_examples=25)
@given(data=st.data())
def test_random_shapes_match_model(data):
    """Any type, M, N, K and kernel: the model's bits (N = 1, M past a tile, K of one sub-block, ...)."""
    name = data.draw(st.sampled_from(ALL_TYPES))
    t = BY_NAME[name]
    k = data.draw(st.integers(1, 40)) * t.block_elems if t.block_elems > 1 else data.draw(st.integers(1, 300))
    n = data.draw(st.integers(1, 9))
    m = data.draw(st.integers(1, 40))
    kind = data.draw(st.sampled_from(["mv", "mm"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    raw, w = weights(name, n, k, rng)
    x = activations(m, k, data.draw(st.sampled_from(list(SUFFIX))), rng)
    got = run_linear(name, raw, x, out_dtype=torch.float32, kind=kind, schedule="reverse")
    want = kernel_model(name, kind, raw, w, x.float().numpy())
    testing.assert_bits_equal(got, torch.from_numpy(want), f"{name} {kind} M={m} N={n} K={k}")


@pytest.mark.parametrize("name", ALL_TYPES)
def test_error_bound_of_the_order_at_model_sizes(name):
    """The bound at transformer sizes (K = 4096 and 14336), through the models (bit-identical to the kernels
    at the sizes the harness runs; the matrix tier in every matrix order), for activations of every dtype and
    with a bias."""
    rng = np.random.default_rng(abs(hash(name) + 4) % 2**32)
    for k in (4096, 14336):
        raw, w = weights(name, 3, k, rng)
        bias = rng.standard_normal(3).astype(np.float32)
        for dtype in SUFFIX:
            x = activations(2, k, dtype, rng).float().numpy()
            assert_within_bound(name, kernel_model(name, "mv", raw, w, x, bias), w, x, bias, "mv")
            for mma_order in ("fma", "sequential", "pairwise"):
                assert_within_bound(name, kernel_model(name, "mm", raw, w, x, bias, mma_order=mma_order), w, x,
                                    bias, "mm")


def test_f16_matrix_tier_copies_half_tiles():
    """F16 weights stay half in the matrix tier's tile (vector copies of 8 halves when a tile's 64 rows and a run
    lie inside the matrix, else element by element): the model's bits for whole and edge tiles (N = 70), K a
    multiple of 32, of 4 only (the last step's runs partly past K) and of neither, with subnormal halves, both
    zeros and the largest half among the weights; mul_mm_id gathers the same tiles."""
    rng = np.random.default_rng(43)
    specials = np.array([0x0001, 0x8001, 0x03FF, 0x83FF, 0x0400, 0x0000, 0x8000, 0x7BFF, 0xFBFF], np.uint16)
    for k in (37, 100, 96):  # the last one, 96, for mul_mm_id too
        n, m = 70, 11
        bits = rng.standard_normal((n, k)).astype(np.float16).view(np.uint16)
        bits.flat[rng.choice(n * k, 200, replace=False)] = rng.choice(specials, 200)
        raw = bits.view(np.uint8).reshape(n, 2 * k)
        w = bits.view(np.float16).astype(np.float32)
        x = activations(m, k, torch.float32, rng)
        for schedule in ("forward", "reverse"):
            got = run_linear("F16", raw, x, kind="mm", schedule=schedule, check_uninitialized=True)
            testing.assert_bits_equal(got, torch.from_numpy(model_mm(w, x.numpy())), f"F16 mm K={k} {schedule}")
        assert_within_bound("F16", got.numpy(), w, x.numpy(), None, "mm")
    raw3 = np.stack([raw, raw[::-1].copy()])
    ids = np.array([[1], [0], [1]] * 4, np.int64)
    x3 = activations(12, k, torch.float32, rng).reshape(12, 1, k)
    got = run_mul_mat_id("F16", raw3, x3, ids, kind="mm_id")
    check_slots("F16", got, ids, raw3, np.stack([w, w[::-1].copy()]), x3.numpy(), 1, "mm_id")


# ---- batch invariance, mul_mat_id ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_TYPES)
def test_batch_invariance(name):
    """Within each tier (mul_mv: M <= 8; mul_mm: M > 8, across tiles of launch.MM_X_ROWS rows) a row's bits do
    not depend on M or on its position."""
    rng = np.random.default_rng(abs(hash(name) + 2) % 2**32)
    k = k_values(name)[0] * 3
    raw, _ = weights(name, 6, k, rng)
    m = launch.MM_X_ROWS + 8
    x = activations(m, k, torch.bfloat16, rng)
    full = run_linear(name, raw, x, out_dtype=torch.float32)  # mul_mm, two tiles of rows
    eight = run_linear(name, raw, x[:8], out_dtype=torch.float32)  # mul_mv
    perm = torch.from_numpy(rng.permutation(8)[:6])
    part = run_linear(name, raw, x[perm], out_dtype=torch.float32)  # mul_mv, other rows and positions
    testing.assert_bits_equal(part, eight[perm], f"{name}: M=6 (permuted) vs M=8")
    for r in (0, 7):
        one = run_linear(name, raw, x[r:r + 1], out_dtype=torch.float32)
        testing.assert_bits_equal(one[0], eight[r], f"{name}: row {r} alone vs in M=8")
    perm = torch.from_numpy(rng.permutation(m)[:12])
    testing.assert_bits_equal(run_linear(name, raw, x[perm], out_dtype=torch.float32), full[perm],
                              f"{name}: M=12 (permuted) vs M={m}")


def expert_weights(name, n_exp, n, k, rng):
    parts = [weights(name, n, k, rng) for _ in range(n_exp)]
    return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])


def check_slots(name, got, ids, raw3, w3, xf, ux, kind="mv_id"):
    """Every slot against the model of a one-row product with its expert in the kernel's tier; NaN rows for
    bad ids."""
    for t, u in np.ndindex(*ids.shape):
        e = ids[t, u]
        if not 0 <= e < w3.shape[0]:
            assert np.isnan(got[t, u]).all(), f"{name}: slot {(t, u)} with id {e} is not NaN"
        else:
            want = kernel_model(name, kind, raw3[e], w3[e], xf[t, u % ux][None])[0]
            testing.assert_bits_equal(got[t, u], want, f"{name}: slot {(t, u)} expert {e} ({kind})")


@pytest.mark.parametrize("name", ALL_TYPES)
def test_mul_mat_id(name):
    """Slot (t, u) = W[ids[t, u]] @ x[t, u % Ux] with the bits of a one-row product on that expert in the
    kernel's tier (mul_mv_id: mat-vec; mul_mm_id: matrix), whatever the other slots route to; ids outside
    [0, E) give a NaN row and read nothing (guard pages)."""
    rng = np.random.default_rng(abs(hash(name) + 3) % 2**32)
    n_exp, n, k = 3, 5, k_values(name)[0] * 2
    raw3, w3 = expert_weights(name, n_exp, n, k, rng)
    ids = np.array([[2, 0], [1, -1], [n_exp, 2]], np.int64)
    for x_dtype, ux in ((torch.float32, 1), (torch.bfloat16, 2)):
        x3 = activations(3 * ux, k, x_dtype, rng).reshape(3, ux, k)
        for kind in ("mv_id", "mm_id"):
            got = run_mul_mat_id(name, raw3, x3, ids, kind=kind, schedule="reverse")
            check_slots(name, got, ids, raw3, w3, x3.float().numpy(), ux, kind)
            alone = run_linear(name, raw3[2], x3[0, 0][None], out_dtype=torch.float32, kind=kind[:2])
            testing.assert_bits_equal(torch.from_numpy(got[0, 0]), alone[0], f"{name}: {kind} slot vs linear")
            rerouted = ids.copy()
            rerouted[0, 1], rerouted[2, 0] = 2, 2  # other slots change experts; slot (0, 0) must not move
            again = run_mul_mat_id(name, raw3, x3, rerouted, kind=kind)
            testing.assert_bits_equal(again[0, 0], got[0, 0], f"{name}: {kind} slot (0, 0) after rerouting")
    assert launch.mul_mat_id_grid(8, 2, n, n_exp)[0] == "mv_id" and launch.mul_mat_id_grid(9, 2, n, n_exp)[0] == "mm_id"


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "IQ2_S", "F32"])
def test_mul_mm_id_windows_and_groups(name):
    """More than MM_X_ROWS (64) slots per expert (several windows, a token repeating an expert: more windows than the
    grid's z), some ids invalid."""
    rng = np.random.default_rng(17)
    n_exp, n, k = 3, 70, k_values(name)[0]
    raw3, w3 = expert_weights(name, n_exp, n, k, rng)
    n_tok, n_used = 40, 4
    ids = rng.integers(-1, n_exp + 1, size=(n_tok, n_used))
    ids[:, 1:3] = 1  # every token routes two slots to expert 1: 80+ slots, more than the grid's 2 windows
    assert (ids == 1).sum() > launch.MM_X_ROWS * launch.mul_mat_id_grid(n_tok, n_used, n, n_exp)[1][2]
    x3 = activations(n_tok, k, torch.float16, rng).reshape(n_tok, 1, k)
    got = run_mul_mat_id(name, raw3, x3, ids, schedule="reverse")
    check_slots(name, got, ids, raw3, w3, x3.float().numpy(), 1, "mm_id")


# ---- the order is really pinned, schedules, sanitizers -------------------------------------------------

@pytest.mark.parametrize("name", ["Q4_K", "Q8_0", "Q4_0", "F16"])
def test_simd_orders_each_match_their_model(name):
    """The mat-vec tier sums lanes in its own pinned order, so every simd_sum order the harness offers gives the
    model's bits; each pinned
    simdgroup-matrix order (the matrix tier) gives the model's bits for that order, and the orders differ
    somewhere: the bit-exact tests would notice a kernel that summed differently."""
    rng = np.random.default_rng(7)
    k = k_values(name)[1]
    raw, w = weights(name, 9, k, rng)
    x = activations(4, k, torch.float32, rng)
    want = kernel_model(name, "mv", raw, w, x.numpy())
    for order in ("butterfly", "adjacent", "sequential"):
        got = run_linear(name, raw, x, kind="mv", simd_order=order)
        testing.assert_bits_equal(got, torch.from_numpy(want), f"{name} mv under simd order {order}")
    results = {}
    results = {}
    for order in ("fma", "sequential", "pairwise"):
        want = kernel_model(name, "mm", raw, w, x.numpy(), mma_order=order)
        got = run_linear(name, raw, x, kind="mm", mma_order=order)
        testing.assert_bits_equal(got, torch.from_numpy(want), f"{name} mm matrix order {order}")
        results[order] = want
    assert testing.bits_mismatch(results["fma"], results["pairwise"]).any()


@pytest.mark.parametrize("name", ["Q4_K", "F32", "IQ2_XXS"])
def test_random_schedule_and_guard_before(name):
    rng = np.random.default_rng(11)
    k = k_values(name)[1]
    raw, w = weights(name, 5, k, rng)
    x = activations(10, k, torch.float16, rng)
    for kind, m in (("mv", 3), ("mm", 10)):
        want = kernel_model(name, kind, raw, w, x[:m].float().numpy())
        got = run_linear(name, raw, x[:m], out_dtype=torch.float32, kind=kind, schedule="random", seed=5,
                         flush="start")
        testing.assert_bits_equal(got, torch.from_numpy(want), f"{name} {kind} random schedule")


def test_ubsan_build():
    """UBSan (index overflow, misaligned or out-of-range accesses) over every kernel kind of a K-quant.
    One type: every extra library costs the harness a pool of fiber stacks."""
    name = "Q4_K"
    per_file = msl_harness.kernel_file(name)
    rng = np.random.default_rng(23)
    k = k_values(name)[1]
    raw3, w3 = expert_weights(name, 2, 5, k, rng)
    x = activations(10, k, torch.float16, rng)
    for kind, m in (("mv", 3), ("mm", 10)):
        want = kernel_model(name, kind, raw3[0], w3[0], x[:m].float().numpy())
        got = run_linear(name, raw3[0], x[:m], out_dtype=torch.float32, kind=kind, path=per_file, ubsan=True)
        testing.assert_bits_equal(got, torch.from_numpy(want), f"{name} {kind} UBSan build")
    ids = np.array([[1, 0], [0, 2], [1, -1]])
    for kind in ("mv_id", "mm_id"):
        got = run_mul_mat_id(name, raw3, x[:3].reshape(3, 1, k), ids, kind=kind, path=per_file, ubsan=True)
        check_slots(name, got, ids, raw3, w3, x[:3].float().numpy()[:, None], 1, kind)


def test_error_constant_follows_the_tree():
    # The decode-exact mat-vec order, F16 (quads), K = 4096: 1024 quads -> 32 per lane = 128 fmas, + 5 for the
    # butterfly over the lanes (+ 1 for the bias).
    assert launch.matvec_error_constant("F16", 4096) == 133
    assert launch.matvec_error_constant("F16", 4096, bias=True) == 134
    # The factored mat-vec order, Q4_K at K = 4096 (an offset: one fma per decoded weight): 16 blocks over 2
    # per step = 8 blocks per lane of 16 elements = 128, + 5 for the butterfly; Q8_0: 4 + 128 blocks / 4 per
    # step * 1 run * 1 fma = 32, + 5, no offset; Q4_0: runs of 8, 128 blocks / 8 per step = 16.
    assert launch.matvec_error_constant("Q4_K", 4096) == 128 + 5
    assert launch.matvec_error_constant("Q8_0", 4096, bias=True) == 4 + 32 + 5 + 1
    assert launch.matvec_error_constant("Q4_0", 4096) == 8 + 16 + 5
    # F16 in the mat-vec tier, K = 1031: 258 quads of 4 (the last holds 3) -> 9 per lane at most.
    assert launch.matvec_error_constant("F16", 1031) == 4 * 9 + 5
    # the matrix tier: 8 additions per step of 8 (any order inside a multiply-accumulate) + the product
    assert launch.matmul_error_constant("Q4_K", 4096, kind="mm") == 4097
    assert launch.matmul_error_constant("F16", 1031, bias=True, kind="mm") == 1032 + 2  # 129 steps of 8
    assert launch.matmul_error_constant("Q4_K", 4096) == launch.matvec_error_constant("Q4_K", 4096)
    assert launch.matmul_grid(8, 7) == ("mv", (1, 1), 64)
    assert launch.matmul_grid(1, 20) == ("mv", (3, 1), 64)  # 4 weight rows per simdgroup at M = 1 ...
    assert launch.matmul_grid(2, 20) == ("mv", (2, 1), 64)  # ... 8 from M = 2 (launch.mv_rows) ...
    assert launch.matmul_grid(1, 20, qtype="IQ1_S") == ("mv", (2, 1), 64)  # ... and from M = 1 for IQ1_S, IQ1_M, Q1_0
    assert launch.matmul_grid(1, 20, qtype="Q4_K") == launch.matmul_grid(1, 20)
    assert launch.matmul_grid(9, 7) == ("mm", (1, 1), 128)
    assert launch.matmul_grid(64, 130) == ("mm", (3, 1), 128)
    assert launch.matmul_grid(65, 130) == ("mm", (3, 2), 128)
    assert launch.mul_mat_id_grid(1, 8, 7, 64) == ("mv_id", (1, 8, 1), 64)
    assert launch.mul_mat_id_grid(64, 8, 7, 64) == ("mm_id", (1, 64, 1), 128)
    assert launch.mul_mat_id_grid(65, 8, 7, 64) == ("mm_id", (1, 64, 2), 128)
    assert launch.mul_mat_id_map_grid(40, 8, 64) == (64, 32, 64 + 64 * 320)


# ---- the run-time Metal path's source ------------------------------------------------------------------

@pytest.fixture(scope="module")
def jit_file():
    return single_source()


def test_jit_source_has_every_matmul_kernel(jit_file):
    src = metal_jit.source(matmul=True)
    assert src.count("kernel void kernel_mul_mm(") == 1 and "#define GGUF_NO_MATMUL" not in src
    assert metal_jit.source().startswith("#define GGUF_NO_MATMUL 1\n")
    lib = msl_harness.compile(jit_file)
    for name in ALL_TYPES:
        n = name.lower()
        for x_dtype, out_dtype in [(torch.float32, torch.float32), *MIXED]:
            for kind in ("mv", "mm"):
                assert f"mul_{kind}_{n}_{SUFFIX[x_dtype]}_{SUFFIX[out_dtype]}" in lib
        for x_dtype in SUFFIX.values():
            assert f"mul_mv_id_{n}_{x_dtype}" in lib and f"mul_mm_id_{n}_{x_dtype}" in lib
        assert f"mul_mm_id_map_{n}" in lib


def test_jit_matmul_source_lints_clean(jit_file):
    findings = msl_lint.lint(jit_file)
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.parametrize("name", ["Q8_0", "Q4_K", "IQ2_XXS", "BF16"])
def test_per_file_libraries_give_the_same_bits(name):
    """The per-file compile units (as kernel-builder builds them) against the single source and the model,
    every kernel kind."""
    rng = np.random.default_rng(13)
    per_file = msl_harness.kernel_file(name)
    k = k_values(name)[1]
    raw, w = weights(name, 7, k, rng)
    bias = rng.standard_normal(7).astype(np.float32)
    for m in (4, 12):
        x = activations(m, k, torch.bfloat16, rng)
        want32 = kernel_model(name, launch.matmul_kernel(m), raw, w, x.float().numpy(), bias)
        want = testing.round_to(torch.from_numpy(want32), torch.bfloat16)
        got = run_linear(name, raw, x, bias, torch.bfloat16, path=per_file, schedule="reverse")
        testing.assert_bits_equal(got, want, f"{per_file.name} {name} M={m}")
        testing.assert_bits_equal(got, run_linear(name, raw, x, bias, torch.bfloat16), f"{name}: per file vs single")
    raw3, w3 = np.stack([raw, raw[::-1].copy()]), np.stack([w, w[::-1].copy()])
    x3 = activations(2, k, torch.float32, rng).reshape(2, 1, k)
    ids = np.array([[1, 0], [0, 5]])
    for kind in ("mv_id", "mm_id"):
        check_slots(name, run_mul_mat_id(name, raw3, x3, ids, kind=kind, path=per_file), ids, raw3, w3,
                    x3.numpy(), 1, kind)


# ---- the run-time path's argument checks (no Mac needed) ----------------------------------------------

def test_jit_linear_refuses_bad_arguments():
    blocks = torch.zeros(3, 18, dtype=torch.uint8)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        metal_jit.linear(torch.zeros(2, 32, dtype=torch.int32), blocks, "Q4_0")
    with pytest.raises(ValueError, match="bytes per weight row"):
        metal_jit.linear(torch.zeros(2, 64), blocks, "Q4_0")
    with pytest.raises(ValueError, match="multiple of the block size"):
        metal_jit.linear(torch.zeros(2, 31), blocks, "Q4_0")
    with pytest.raises(ValueError, match="bias must have shape"):
        metal_jit.linear(torch.zeros(2, 32), blocks, "Q4_0", torch.zeros(4))
    with pytest.raises(ValueError, match="out_features"):
        metal_jit.mul_mat_vec(blocks, torch.zeros(2, 32), "Q4_0", 4)
    with pytest.raises(TypeError, match="ids"):
        metal_jit.mul_mat_id(blocks[None], torch.zeros(2, 32), torch.zeros(2, 1), "Q4_0", 3)
    with pytest.raises(ValueError, match="mps"):
        metal_jit.linear(torch.zeros(2, 32), blocks, "Q4_0")


# ---- the host dispatch files parse (Objective-C++, stub Apple headers, real torch headers) ------------

@pytest.mark.parametrize("mm", ["dequantize.mm", "matmul.mm"])
def test_host_dispatch_parses(mm):
    """A syntax and type check of metal/*.mm on Linux: catches e.g. a C array captured by the dispatch
    block or a signature drifting from torch_binding.h. The Apple declarations are stand-ins."""
    import subprocess

    include = Path(torch.__file__).parent / "include"
    stubs = Path(__file__).parent / "objc_stubs"
    cmd = [msl_harness.CLANG, "-x", "objective-c++", "-std=c++17", "-fblocks", "-fobjc-runtime=gnustep-2.0",
           "-fobjc-arc", "-fsyntax-only", "-Wall", "-Wno-c++20-extensions", f"-I{stubs}", f"-I{ROOT / 'metal'}",
           f"-I{ROOT / 'torch-ext'}", f"-I{include}", f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
           '-DEMBEDDED_METALLIB_HEADER="metallib_stub.h"', "-DEMBEDDED_METALLIB_NAMESPACE=gguf_metal",
           str(ROOT / "metal" / mm)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr[-4000:]
