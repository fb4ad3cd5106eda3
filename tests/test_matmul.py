"""Compute on packed weights (linear, mul_mat_vec, mul_mat_id, layers) through the CPU build of the Hub package.

The CPU matrix kernels have one summation order per output in every build (README, "Compute on packed
weights"): 16 lanes, element k into lane k mod 16 by a fused multiply-add in increasing k, lanes summed pairwise
(i + 8, i + 4, i + 2, i + 1), bias added, one rounding. ``model_linear`` below computes exactly that in numpy
(an exact float32 FMA through float64 and round-to-odd), so results are checked bit for bit, and against float64
with the bound ``|y - y_exact| <= c * u * sum|w_k x_k|``, ``c = n / (1 - n u)``, ``n = ceil(K / 16) + 4`` (+ 1
with a bias), ``u = 2^-24``. Where the mat-vec tier runs (AVX512-BF16: M <= 8 and mul_mat_id slots of the
factored types), ``expected`` takes its model and bound from ``test_matvec_tier``.
"""

import itertools
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gguf_dequant import reference, testing
from gguf_dequant.types import SUPPORTED, resolve

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES
from .hub import ROOT, hub_kernel
from .test_matvec_tier import uses_tier

U = 2.0 ** -24


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a * b + c rounded once (finite inputs): the product is exact in float64, TwoSum gives the
    exact sum as hi + lo, rounding hi to odd keeps the one rounding to float32 correct."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = c.astype(np.float64)
    hi = p + c
    bv = hi - p
    lo = (p - (hi - bv)) + (c - bv)
    fix = (lo != 0) & ((hi.view(np.int64) & 1) == 0)
    hi = np.where(fix, np.nextafter(hi, np.where(lo > 0, np.inf, -np.inf)), hi)
    return hi.astype(np.float32)


def model_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> np.ndarray:
    """The CPU kernels' exact order: (M, K) x, (N, K) decoded weights -> (M, N) float32."""
    x = x.float().numpy()
    w = w.float().numpy()
    k = x.shape[1]
    kp = -(-k // 16) * 16
    x = np.pad(x, ((0, 0), (0, kp - k)))
    w = np.pad(w, ((0, 0), (0, kp - k)))
    acc = np.zeros((x.shape[0], w.shape[0], 16), np.float32)
    for c in range(0, kp, 16):
        acc = fma32(w[None, :, c:c + 16], x[:, None, c:c + 16], acc)
    for h in (8, 4, 2, 1):
        acc = acc[..., :h] + acc[..., h:2 * h]
    y = acc[..., 0]
    if bias is not None:
        y = y + bias.float().numpy()
    return y


def expected(x: torch.Tensor, blocks: torch.Tensor, w: torch.Tensor, name, bias=None, slots: bool = False):
    """The model of the order that runs for this call: the mat-vec tier's (linear with x's rows, or mul_mat_id
    slots) or the matrix kernels'."""
    from .test_amx_tier import amx_result
    from .test_matvec_tier import model_matvec, uses_tier

    if not x.numel() or not blocks.numel():  # empty: zeros + bias
        return model_linear(x, w, bias)
    amx = None if slots else amx_result(x, blocks, name, bias)
    if amx is not None:
        return amx
    if uses_tier(name, None if slots else x.shape[0]):
        return model_matvec(x, blocks, resolve(name).name, bias)
    return model_linear(x, w, bias)


def bound(x: torch.Tensor, w: torch.Tensor, bias=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(float64 result, sum |w x| (+ |b|), c = n / (1 - n u) for n roundings per term)."""
    x64, w64 = x.double(), w.double()
    exact, mag = x64 @ w64.T, x64.abs() @ w64.abs().T
    n = -(-x.shape[-1] // 16) + 4
    if bias is not None:
        exact, mag, n = exact + bias.double(), mag + bias.double().abs(), n + 1
    return exact, mag, n / (1 - n * U)


def packed(name: str, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, bytes_per_row) random blocks with finite scales, and their float32 decode."""
    t = resolve(name)
    raw = testing.random_blocks(name, n * k // t.block_elems, np.random.default_rng(seed))
    blocks = torch.from_numpy(raw.reshape(n, -1))
    return blocks, reference.dequantize(blocks, name)


def k_values(name: str) -> list[int]:
    qk = resolve(name).block_elems
    return [100, 16, 1040] if qk == 1 else sorted({qk, 4 * qk if qk < 256 else 512, 2048})


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_exact_order_and_error_bound(name, dtype):
    k = hub_kernel()
    gen = torch.Generator().manual_seed(resolve(name).id)
    for K in k_values(name):
        blocks, w = packed(name, 19, K, seed=K)
        x = torch.randn(3, K, generator=gen).to(dtype)
        bias = torch.randn(19, generator=gen).to(dtype)
        y32 = k.mul_mat_vec(blocks, x, resolve(name).id, 19)
        assert y32.dtype == torch.float32 and y32.shape == (3, 19)
        testing.assert_bits_equal(y32, torch.from_numpy(expected(x, blocks, w, name)), f"{name} K={K}")
        y = k.linear(x, blocks, name, bias)
        assert y.dtype == dtype and y.shape == (3, 19)
        want = expected(x, blocks, w, name, bias)
        testing.assert_bits_equal(y, torch.from_numpy(want).to(dtype), f"{name} K={K} + bias")
        if uses_tier(name, 3):
            continue  # its bound: test_matvec_tier.py
        exact, mag, c = bound(x, w)
        err = (y32.double() - exact).abs()
        assert (err <= c * U * mag).all(), f"{name} K={K}: max err {(err / mag).max().item() / U:.2f} u > {c:.3f} u"
        exact, mag, c = bound(x, w, bias)
        assert ((torch.from_numpy(want).double() - exact).abs() <= c * U * mag).all()


@given(data=st.data())
def test_fuzz_shapes_against_the_model(data):
    """Random types, shapes, rows, dtypes and biases (also run under ASan + UBSan by test_sanitizers.py)."""
    k = hub_kernel()
    t = SUPPORTED[data.draw(st.sampled_from(sorted(SUPPORTED)))]
    qk = t.block_elems
    K = data.draw(st.integers(1, 40)) if qk == 1 else qk * data.draw(st.integers(0, 3))
    N, M = data.draw(st.integers(0, 21)), data.draw(st.integers(0, 13))
    dtype = data.draw(st.sampled_from(OUT_DTYPES))
    seed = data.draw(st.integers(0, 2**32 - 1))
    raw = testing.random_blocks(t, N * K // qk, np.random.default_rng(seed))
    blocks = torch.from_numpy(raw.reshape(N, K // qk * t.block_bytes))
    w = reference.dequantize(blocks, t)
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((M, K), dtype=np.float32)).to(dtype)
    bias = torch.randn(N, generator=torch.Generator().manual_seed(seed)) if data.draw(st.booleans()) else None
    got = k.linear(x, blocks, t.id, bias)
    testing.assert_bits_equal(got, torch.from_numpy(expected(x, blocks, w, t.id, bias)).to(dtype),
                              f"{t.name} {M}x{K}x{N}")
    if N and M:
        E = data.draw(st.integers(1, 3))
        experts = blocks.repeat(E, 1, 1)
        ids = torch.from_numpy(np.random.default_rng(seed + 2).integers(0, E, (M, 2), dtype=np.int32))
        y = k.mul_mat_id(experts, x, ids, t.id, N)
        want = expected(x, blocks, w, t.id, slots=True)
        testing.assert_bits_equal(y, torch.from_numpy(want)[:, None, :].expand(M, 2, N), "mul_mat_id")


def test_nonfinite_weights_propagate():
    k = hub_kernel()
    blocks, w = packed("Q8_0", 4, 64)
    blocks[1, 0:2] = torch.tensor([0x00, 0x7C], dtype=torch.uint8)  # scale +inf in the first block of row 1
    blocks[2, 34:36] = torch.tensor([0x00, 0x7E], dtype=torch.uint8)  # NaN scale in the second block of row 2
    w = reference.dequantize(blocks, "Q8_0")
    x = torch.randn(2, 64)
    y = k.linear(x, blocks, "Q8_0")
    expected = x.double() @ w.double().T
    assert torch.equal(torch.isnan(y), torch.isnan(expected.float()))
    assert torch.isnan(y[:, 2]).all()


ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 64]


@pytest.mark.parametrize("name", ["Q4_K", "Q8_0", "IQ2_XXS", "BF16"])
def test_batch_invariance(name):
    k = hub_kernel()
    K = 512
    blocks, _ = packed(name, 40, K, seed=3)
    x = torch.randn(80, K, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3))
    full = k.linear(x, blocks, name)  # the matrix tier
    one_by_one = torch.cat([k.linear(x[i:i + 1], blocks, name) for i in range(80)])  # the mat-vec tier
    for m in ROWS:
        tier = one_by_one if m <= k.MAX_GEMV_ROWS else full  # contract v2: invariant within each tier
        for start in (0, 80 - m, 7 % (81 - m)):
            part = k.linear(x[start:start + m], blocks, name)
            testing.assert_bits_equal(part, tier[start:start + m], f"{name} rows {start}..{start + m}")
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(0))
    testing.assert_bits_equal(k.linear(x[perm], blocks, name), full[perm], "permuted rows")
    testing.assert_bits_equal(k.mul_mat_vec(blocks, x[5:6].float(), resolve(name).id, 40).to(torch.bfloat16),
                              one_by_one[5:6], "mul_mat_vec rounded once more = linear in bfloat16")


def test_many_rows_span_several_row_blocks():
    k = hub_kernel()
    blocks, w = packed("Q5_K", 5, 256, seed=13)
    x = torch.randn(1100, 256)  # more than two blocks of 512 rows
    full = k.linear(x, blocks, "Q5_K")
    rows = [0, 511, 512, 1023, 1024, 1099]
    testing.assert_bits_equal(full[rows], torch.from_numpy(model_linear(x[rows], w)), "rows across blocks")


def test_determinism_across_runs_and_thread_counts():
    k = hub_kernel()
    blocks, _ = packed("Q6_K", 256, 1024, seed=4)
    x = torch.randn(12, 1024)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            results.append(k.linear(x, blocks, "Q6_K"))
    finally:
        torch.set_num_threads(before)
    for r in results[1:]:
        testing.assert_bits_equal(r, results[0], "threads")


ISA_SCRIPT = """
import sys, torch, numpy as np
sys.path.insert(0, {root!r})
from tests.hub import _load
from gguf_dequant import testing
from gguf_dequant.types import SUPPORTED
k, _ = _load()
out = []
for t in SUPPORTED.values():  # every type: the decode functions compile per instruction set too
    raw = testing.random_blocks(t, 24 * 512 // t.block_elems, np.random.default_rng(t.id))
    x = torch.randn(11, 512, generator=torch.Generator().manual_seed(t.id))
    out.append(k.linear(x, torch.from_numpy(raw.reshape(24, -1)), t.id).numpy())
np.save(sys.argv[1], np.stack(out))
"""


def test_every_instruction_set_gives_the_same_bits(tmp_path):
    hub_kernel()
    results = {}
    for isa in ("default", "avx512", "avx2", "baseline"):  # 11 rows: the matrix tier, one order in every build
        env = dict(os.environ, GGUF_DEQUANT_CPU_ISA=isa)
        path = tmp_path / f"{isa}.npy"
        subprocess.run([sys.executable, "-c", ISA_SCRIPT.format(root=str(ROOT)), str(path)], env=env, check=True,
                       cwd=ROOT)
        results[isa] = np.load(path)
    testing.assert_bits_equal(results["avx512"], results["default"], "avx512 vs default")
    testing.assert_bits_equal(results["avx2"], results["default"], "avx2 vs default")
    testing.assert_bits_equal(results["baseline"], results["default"], "baseline vs default")


def experts(name: str, e: int, n: int, k: int, seed: int = 5):
    t = resolve(name)
    raw = testing.random_blocks(name, e * n * k // t.block_elems, np.random.default_rng(seed))
    blocks = torch.from_numpy(raw.reshape(e, n, -1))
    return blocks, reference.dequantize(blocks, name)


@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
def test_mul_mat_id_transformers_call_shapes(ids_dtype):
    k = hub_kernel()
    E, T, U, H, I = 6, 5, 3, 256, 64  # noqa: E741 - the usual MoE names
    gate_up, _ = experts("Q4_K", E, 2 * I, H)
    down, _ = experts("Q8_0", E, H, I, seed=6)
    x = torch.randn(T, H, dtype=torch.bfloat16)
    ids = torch.randint(0, E, (T, U), generator=torch.Generator().manual_seed(1), dtype=ids_dtype)
    h = k.mul_mat_id(gate_up, x, ids, 12, 2 * I)
    assert h.shape == (T, U, 2 * I) and h.dtype == torch.float32
    for t in range(T):
        for u in range(U):
            want = k.mul_mat_vec(gate_up[ids[t, u]], x[t:t + 1], 12, 2 * I)[0]
            testing.assert_bits_equal(h[t, u], want, f"slot {t},{u}")
    act = h[..., :I].reshape(T * U, I)
    y = k.mul_mat_id(down, act, ids.reshape(T * U, 1), 8, H)
    assert y.shape == (T * U, 1, H)
    for s in range(T * U):
        want = k.mul_mat_vec(down[ids.reshape(-1)[s]], act[s:s + 1], 8, H)[0]
        testing.assert_bits_equal(y[s, 0], want, f"slot {s}")
    y3 = k.mul_mat_id(down, act.reshape(T, U, I), ids, 8, H)  # one x row per slot
    testing.assert_bits_equal(y3, y.reshape(T, U, H), "(T, U, K) x")


def test_mul_mat_id_slot_does_not_depend_on_other_tokens():
    k = hub_kernel()
    blocks, _ = experts("IQ4_XS", 8, 32, 256)
    x = torch.randn(16, 256)
    ids = torch.randint(0, 8, (16, 4), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    full = k.mul_mat_id(blocks, x, ids, "IQ4_XS", 32)
    alone = k.mul_mat_id(blocks, x[9:10], ids[9:10], "IQ4_XS", 32)
    testing.assert_bits_equal(alone[0], full[9], "token alone")
    other = ids.clone()
    other[:9] = (other[:9] + 3) % 8
    testing.assert_bits_equal(k.mul_mat_id(blocks, x, other, "IQ4_XS", 32)[9:], full[9:], "rerouted others")


def test_empty_inputs():
    k = hub_kernel()
    blocks, _ = packed("Q4_0", 5, 64)
    assert k.linear(torch.zeros(0, 64), blocks, "Q4_0").shape == (0, 5)
    assert k.linear(torch.zeros(2, 0, 64), blocks, "Q4_0").shape == (2, 0, 5)
    assert k.mul_mat_id(blocks[None], torch.zeros(0, 64), torch.zeros(0, 2, dtype=torch.int32), 2, 5).shape == (0, 2, 5)
    y = k.linear(torch.randn(2, 0), torch.zeros(3, 0, dtype=torch.uint8), "F32", torch.ones(3))
    assert torch.equal(y, torch.ones(2, 3))
    for m, dtype in itertools.product((1, 8, 9, 64), (torch.float32, torch.bfloat16)):  # K = 0 in every tier
        for bias in (None, torch.ones(3)):
            y = k.linear(torch.randn(m, 0).to(dtype), torch.zeros(3, 0, dtype=torch.uint8), "Q4_K", bias)
            assert torch.equal(y, (torch.zeros if bias is None else torch.ones)(m, 3, dtype=dtype)), (m, dtype, bias)


def test_leading_dimensions_and_noncontiguous_x():
    k = hub_kernel()
    blocks, w = packed("Q5_0", 6, 64)
    x = torch.randn(2, 3, 128)[..., ::2]
    y = k.linear(x, blocks, "Q5_0")
    assert y.shape == (2, 3, 6)
    testing.assert_bits_equal(y.reshape(6, 6), torch.from_numpy(expected(x.reshape(6, 64), blocks, w, "Q5_0")))


def test_misaligned_blocks_are_handled():
    k = hub_kernel()
    blocks, w = packed("Q4_K", 3, 256)
    storage = torch.empty(blocks.numel() + 1, dtype=torch.uint8)
    storage[1:] = blocks.reshape(-1)
    x = torch.randn(1, 256)
    testing.assert_bits_equal(k.linear(x, storage[1:].view(3, -1), "Q4_K"), k.linear(x, blocks, "Q4_K"))


class TestBadInput:
    blocks = torch.zeros(4, 36, dtype=torch.uint8)  # Q4_0: 4 rows of 64 elements
    x = torch.zeros(2, 64)

    @pytest.mark.parametrize("call, error, match", [
        (lambda k, b, x: k.linear(x.double(), b, "Q4_0"), TypeError, "float32, float16 or bfloat16"),
        (lambda k, b, x: k.linear(x.int(), b, "Q4_0"), TypeError, "x must be"),
        (lambda k, b, x: k.linear(x, b.to(torch.int8), "Q4_0"), TypeError, "uint8"),
        (lambda k, b, x: k.linear(x[:, :32], b, "Q4_0"), ValueError, "64 elements"),
        (lambda k, b, x: k.linear(x, b[:, :35].contiguous(), "Q4_0"), ValueError, "18 bytes"),
        (lambda k, b, x: k.linear(x, b.reshape(-1), "Q4_0"), ValueError, "out_features, bytes_per_row"),
        (lambda k, b, x: k.linear(x, torch.zeros(72, 4, dtype=torch.uint8).t(), "Q4_0"), ValueError, "contiguous"),
        (lambda k, b, x: k.linear(x, b, "Q4_0", torch.zeros(3)), ValueError, r"bias must be \(4,\)"),
        (lambda k, b, x: k.linear(x, b, "Q4_0", torch.zeros(4, dtype=torch.float64)), TypeError, "bias"),
        (lambda k, b, x: k.linear(x, b, "Q4_0", torch.zeros(1, 4)), ValueError, "bias"),
        (lambda k, b, x: k.linear(x, b, 43), ValueError, "type id 43"),
        (lambda k, b, x: k.linear(x, b, "Q8_K"), ValueError, "type"),
        (lambda k, b, x: k.linear(x.to("meta"), b, "Q4_0"), ValueError, "devices|device"),
        (lambda k, b, x: k.linear([0.0] * 64, b, "Q4_0"), TypeError, "x must be a torch.Tensor"),
        (lambda k, b, x: k.mul_mat_vec(b, x, 2, 5), ValueError, "out_features is 5 but blocks have 4 rows"),
        (lambda k, b, x: k.mul_mat_vec(b, x[0], 2, 4), ValueError, r"\(rows, in_features\)"),
        (lambda k, b, x: k.mul_mat_vec(b, x[:, :63], 2, 4), ValueError, "in_features"),
        (lambda k, b, x: k.mul_mat_id(b, x, torch.zeros(2, 1, dtype=torch.int32), 2, 4), ValueError,
         "experts, out_features, bytes_per_row"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.zeros(2, 1), 2, 4), TypeError, "int32 or int64"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.zeros(2, dtype=torch.int32), 2, 4), ValueError, "ids must be"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.zeros(3, 1, dtype=torch.int32), 2, 4), ValueError, "x must be"),
        (lambda k, b, x: k.mul_mat_id(b[None], x.reshape(2, 1, 64).expand(2, 2, 64),
                                      torch.zeros(2, 3, dtype=torch.int32), 2, 4), ValueError, "x must be"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.ones(2, 1, dtype=torch.int32), 2, 4), IndexError,
         r"ids must be in \[0, 1\)"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.full((2, 1), -1), 2, 4), IndexError, r"\[0, 1\)"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.full((2, 1), 2 ** 32), 2, 4), IndexError, r"\[0, 1\)"),
        (lambda k, b, x: k.mul_mat_id(b[None], x, torch.zeros(2, 1, dtype=torch.int32), 2, 3), ValueError,
         "out_features"),
    ])
    def test_raises(self, call, error, match):
        k = hub_kernel()
        with pytest.raises(error, match=match):
            call(k, self.blocks, self.x)


def test_opcheck_and_compile():
    k = hub_kernel()
    blocks, _ = packed("Q4_K", 8, 256)
    x = torch.randn(3, 256, dtype=torch.bfloat16)
    bias = torch.randn(8, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 1], [1, 1], [0, 0]], dtype=torch.int32)
    e_blocks = torch.stack([blocks, blocks.flip(0)])
    torch.library.opcheck(k.ops.linear, (x, blocks, 12, bias))
    torch.library.opcheck(k.ops.linear, (x.float(), blocks, 12, None))
    torch.library.opcheck(k.ops.mul_mat_vec, (blocks, x, 12, 8))
    torch.library.opcheck(k.ops.mul_mat_id, (e_blocks, x, ids, 12, 8))

    @torch.compile(fullgraph=True, backend="eager")
    def f(x, blocks, bias):
        return k.linear(x, blocks, "q4_k", bias).relu() + k.mul_mat_vec(blocks, x, 12, 8)

    testing.assert_bits_equal(f(x, blocks, bias), k.linear(x, blocks, "q4_k", bias).relu()
                              + k.mul_mat_vec(blocks, x, 12, 8))


def test_layers_state_dict_and_compile():
    k = hub_kernel()
    blocks, w = packed("Q6_K", 16, 256)
    table, table_f32 = packed("Q8_0", 10, 64, seed=9)
    lin = k.layers.GGUFLinear.from_blocks(blocks, "Q6_K", 256, bias=torch.randn(16))
    emb = k.layers.GGUFEmbedding(10, 64, 8)
    emb.weight.copy_(table)
    assert (lin.in_features, lin.out_features, lin.qtype) == (256, 16, 14) and emb.embedding_dim == 64
    fresh = k.layers.GGUFLinear(256, 16, "Q6_K", bias=True)
    fresh.load_state_dict(lin.state_dict())
    assert set(lin.state_dict()) == {"weight", "bias"} and lin.state_dict()["weight"].dtype == torch.uint8
    x = torch.randn(2, 5, 256)
    testing.assert_bits_equal(fresh(x), lin(x))
    testing.assert_bits_equal(lin(x), k.linear(x, blocks, 14, lin.bias))
    ids = torch.tensor([[3, 9], [0, 3]])
    testing.assert_bits_equal(emb(ids), table_f32[ids])
    compiled_lin = torch.compile(lin, fullgraph=True, backend="eager")
    compiled_emb = torch.compile(emb, fullgraph=True, backend="eager")
    testing.assert_bits_equal(compiled_lin(x), lin(x))
    testing.assert_bits_equal(compiled_emb(ids), emb(ids))


def test_layers_from_gguf_reader(tmp_path):
    k = hub_kernel()
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((12, 256)).astype(np.float32)
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(dense, gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", dense[:, :64].copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    lin = k.layers.GGUFLinear.from_gguf_tensor(tensors["blk.0.attn_q.weight"])
    emb = k.layers.GGUFEmbedding.from_gguf_tensor(tensors["token_embd.weight"], dtype=torch.bfloat16)
    assert (lin.in_features, lin.out_features, lin.qtype) == (256, 12, 8)
    assert (emb.num_embeddings, emb.embedding_dim, emb.qtype) == (12, 64, 0)
    w = torch.from_numpy(gguf.quants.dequantize(tensors["blk.0.attn_q.weight"].data, gguf.GGMLQuantizationType.Q8_0))
    x = torch.randn(3, 256)
    blocks = torch.from_numpy(np.ascontiguousarray(tensors["blk.0.attn_q.weight"].data))
    testing.assert_bits_equal(lin(x), torch.from_numpy(expected(x, blocks, w, "Q8_0")))
    testing.assert_bits_equal(emb(torch.tensor([11, 0])), torch.from_numpy(dense[[11, 0], :64]).to(torch.bfloat16))


def test_api_constants():
    k = hub_kernel()
    assert k.GEMV_TYPES == frozenset(SUPPORTED) and len(k.GEMV_TYPES) == 28
    assert k.MAX_GEMV_ROWS == 8


@pytest.mark.parametrize("name", ["Q4_K", "F16", "TQ1_0", "Q1_0"])
def test_front_door_linear(name):
    import gguf_dequant
    from gguf_dequant import backends

    blocks, w = packed(name, 9, 256, seed=11)
    x = torch.randn(2, 3, 256, dtype=torch.bfloat16)
    bias = torch.randn(9)
    ref = gguf_dequant.linear(x, blocks, name, bias, backend="reference")
    assert ref.shape == (2, 3, 9) and ref.dtype == torch.bfloat16
    exact, mag, c = bound(x.reshape(6, 256), w, bias)
    ref32 = gguf_dequant.linear(x.float(), blocks.numpy(), name, bias, backend="reference").reshape(6, 9)
    assert ((ref32.double() - exact).abs() <= (256 + 1) * U * mag).all()  # torch's order: sequential at worst
    testing.assert_bits_equal(ref, ref32.reshape(2, 3, 9).to(torch.bfloat16), "one rounding")
    hub_kernel()
    backends.reset()
    got = gguf_dequant.linear(x, blocks, name, bias)
    assert backends.explain("cpu", name)[0] == "kernel"
    testing.assert_bits_equal(got, torch.from_numpy(model_linear(x.reshape(6, 256), w, bias)).to(torch.bfloat16)
                              .reshape(2, 3, 9), "kernel backend")
    with pytest.raises(ValueError, match="in_features"):
        gguf_dequant.linear(x[..., :128], blocks, name, backend="reference")
    with pytest.raises(ValueError, match="bias"):
        gguf_dequant.linear(x, blocks, name, bias[:3], backend="reference")
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        gguf_dequant.linear(x.double(), blocks, name, backend="reference")


def test_reference_linear_in_bounded_chunks(monkeypatch):
    from gguf_dequant import reference as ref_module

    monkeypatch.setattr(ref_module, "LINEAR_CHUNK_ELEMS", 3 * 256)  # three weight rows at a time
    blocks, w = packed("Q6_K", 10, 256, seed=12)
    x = torch.randn(4, 256)
    got = ref_module.linear(x, blocks, "Q6_K")
    exact, mag, _ = bound(x, w)
    assert got.shape == (4, 10) and ((got.double() - exact).abs() <= 257 * U * mag).all()


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs a Mac with MPS (torch.backends.mps)")
@pytest.mark.parametrize("name", ["Q4_K", "IQ4_XS", "MXFP4"])
def test_front_door_linear_on_mps(name):
    import gguf_dequant
    from gguf_dequant import backends

    blocks, w = packed(name, 24, 512, seed=14)
    x = torch.randn(9, 512)
    bias = torch.randn(24)
    exact, mag, _ = bound(x, w, bias)
    for backend in backends.available_backends("mps"):
        if backends._linear_fn(backend, "mps") is None:
            continue  # e.g. a published kernel build from before linear existed
        got = gguf_dequant.linear(x.to("mps"), blocks.to("mps"), name, bias.to("mps"), backend=backend)
        assert got.device.type == "mps" and got.shape == (9, 24)
        assert ((got.cpu().double() - exact).abs() <= (512 + 1) * U * mag).all(), backend
        rows = gguf_dequant.linear(x[3:5].to("mps"), blocks.to("mps"), name, bias.to("mps"), backend=backend)
        if backend != "reference":  # the kernels are batch-invariant; torch's matmul need not be
            testing.assert_bits_equal(rows.cpu(), got[3:5].cpu(), f"{backend} batch invariance")
