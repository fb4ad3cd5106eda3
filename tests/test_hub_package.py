"""The CPU variant of the Hub package, loaded through kernels.get_local_kernel, against the reference."""

import threading

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


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
@given(data=st.data())
def test_parity_with_reference(name, dtype, data):
    k = hub_kernel()
    t = resolve(name)
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=12))
    n = len(raw) // t.block_bytes
    rows = data.draw(st.sampled_from([r for r in (1, 2, 3) if n % r == 0] or [1]))
    blob = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(rows, -1) if n else torch.zeros(rows, 0, dtype=torch.uint8)
    expected = reference.dequantize(blob, name, dtype)
    got = k.dequantize(blob, t.id, dtype)
    assert got.shape == expected.shape and got.dtype == dtype
    testing.assert_bits_equal(got, expected, f"{name} -> {dtype}")


def test_metadata_and_supported_types():
    k = hub_kernel()
    assert k.supported_types() == frozenset(SUPPORTED)
    assert k.supported_devices() == ("cpu",)
    assert k.GGML_TYPES["Q4_K"] == 12 and k.TYPE_NAMES[42] == "Q2_0"
    for name in k.__all__:
        assert hasattr(k, name), name


@pytest.mark.parametrize("spelling", [12, "q4_k", gguf.GGMLQuantizationType.Q4_K])
def test_type_spellings(spelling):
    k = hub_kernel()
    blob = torch.from_numpy(testing.random_blocks("Q4_K", 2, np.random.default_rng(0)).reshape(-1))
    testing.assert_bits_equal(k.dequantize(blob, spelling), reference.dequantize(blob, "Q4_K"))


def test_out_parameter_writes_in_place():
    k = hub_kernel()
    blob = torch.from_numpy(testing.random_blocks("Q6_K", 8, np.random.default_rng(1)).reshape(2, -1))
    param = torch.full((4, 2, 1024), float("nan"), dtype=torch.bfloat16)
    target = param[1]  # a contiguous view into larger storage, non-zero storage offset
    assert k.dequantize(blob, "Q6_K", torch.bfloat16, out=target) is target
    testing.assert_bits_equal(param[1], reference.dequantize(blob, "Q6_K", torch.bfloat16))
    assert torch.isnan(param[0]).all() and torch.isnan(param[2:]).all()


def test_transformers_call_shape():
    k = hub_kernel()
    rows, cols = 3, 512
    blocks = torch.from_numpy(testing.random_blocks("Q4_K", rows * 2, np.random.default_rng(2)).reshape(rows, -1))
    got = k.dequantize(blocks, 12, rows, cols, torch.float16)
    assert got.shape == (rows, cols)
    testing.assert_bits_equal(got, reference.dequantize(blocks, "Q4_K", torch.float16))
    with pytest.raises(ValueError, match="rows"):
        k.dequantize(blocks, 12, rows, cols + 256, torch.float16)


def test_get_rows_decodes_only_requested_rows():
    k = hub_kernel()
    rows, cols = 10, 256
    blocks = torch.from_numpy(testing.random_blocks("IQ4_XS", rows, np.random.default_rng(3)).reshape(rows, -1))
    idx = torch.tensor([[7, 0], [7, 3]])
    got = k.get_rows(blocks, idx, "IQ4_XS", cols, torch.float32)
    assert got.shape == (2, 2, cols)
    full = reference.dequantize(blocks, "IQ4_XS")
    testing.assert_bits_equal(got, full[idx])


@pytest.mark.parametrize("fn_name, name", [("torch_dequantize_q4_0", "Q4_0"), ("torch_dequantize_q4_K", "Q4_K"),
                                           ("torch_dequantize_q8_0", "Q8_0"), ("torch_dequantize_q5_K", "Q5_K"),
                                           ("torch_dequantize_q6_K", "Q6_K"), ("torch_dequantize_iq4_nl", "IQ4_NL"),
                                           ("torch_dequantize_iq4_xs", "IQ4_XS")])
def test_earlier_metal_fast_path_functions(fn_name, name):
    k = hub_kernel()
    t = resolve(name)
    flat_in = torch.from_numpy(testing.random_blocks(name, 5, np.random.default_rng(4)).reshape(-1))
    flat_out = torch.empty(5 * t.block_elems, dtype=torch.float32)
    getattr(k, fn_name)(flat_in, flat_out)
    testing.assert_bits_equal(flat_out, reference.dequantize(flat_in, name))


def test_concurrent_calls_agree():
    k = hub_kernel()
    blob = torch.from_numpy(testing.random_blocks("Q5_K", 512, np.random.default_rng(5)).reshape(8, -1))
    expected = reference.dequantize(blob, "Q5_K", torch.float16)
    results, errors = [None] * 6, []

    def work(i):
        try:
            results[i] = [k.dequantize(blob, "Q5_K", torch.float16) for _ in range(5)]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for batch in results:
        for got in batch:
            testing.assert_bits_equal(got, expected, "concurrent")


def test_misaligned_blob_is_handled():
    k = hub_kernel()
    raw = torch.from_numpy(testing.random_blocks("Q4_0", 64, np.random.default_rng(6)).reshape(-1))
    padded = torch.empty(raw.numel() + 1, dtype=torch.uint8)
    padded[1:] = raw
    testing.assert_bits_equal(k.dequantize(padded[1:], "Q4_0"), reference.dequantize(raw, "Q4_0"))


class TestBadInput:
    def test_wrong_blob_dtype(self):
        k = hub_kernel()
        with pytest.raises(TypeError, match="uint8"):
            k.dequantize(torch.zeros(18, dtype=torch.int8), "Q4_0")
        with pytest.raises(TypeError, match="uint8"):
            k.get_rows(torch.zeros(2, 18, dtype=torch.int16), torch.tensor([0]), "Q4_0", 32)

    def test_size_not_multiple_of_block(self):
        k = hub_kernel()
        with pytest.raises(ValueError, match="not a multiple"):
            k.dequantize(torch.zeros(19, dtype=torch.uint8), "Q4_0")
        with pytest.raises(ValueError, match="not a multiple"):
            k.torch_dequantize_q4_0(torch.zeros(19, dtype=torch.uint8), torch.empty(32))

    @pytest.mark.parametrize("qtype", [9, 15, 43, -1, "Q8_K", "bogus"])
    def test_unknown_type(self, qtype):
        k = hub_kernel()
        with pytest.raises(ValueError, match="type"):
            k.dequantize(torch.zeros(36, dtype=torch.uint8), qtype)

    def test_unknown_type_through_the_raw_op(self):
        k = hub_kernel()
        with pytest.raises(ValueError, match="type id 43"):
            k.ops.dequantize(torch.zeros(36, dtype=torch.uint8), 43, torch.float32)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
    def test_unsupported_dtype(self, dtype):
        k = hub_kernel()
        with pytest.raises(TypeError, match="dtype"):
            k.dequantize(torch.zeros(18, dtype=torch.uint8), "Q4_0", dtype)
        with pytest.raises(TypeError, match="dtype"):
            k.ops.dequantize(torch.zeros(18, dtype=torch.uint8), 2, dtype)

    def test_wrong_device(self, monkeypatch):
        k = hub_kernel()
        monkeypatch.setattr(k, "supported_devices", lambda: ("mps",))  # as a Metal build sees a CPU tensor
        with pytest.raises(ValueError, match="runs on mps; the blob is on cpu"):
            k.dequantize(torch.zeros(18, dtype=torch.uint8), "Q4_0")

    def test_out_mismatch(self):
        k = hub_kernel()
        blob = torch.zeros(2, 36, dtype=torch.uint8)
        with pytest.raises(ValueError, match="shape"):
            k.dequantize(blob, "Q4_0", out=torch.empty(2, 32))
        with pytest.raises(ValueError, match="contiguous"):
            k.dequantize(blob, "Q4_0", out=torch.empty(64, 2).t())
        with pytest.raises(TypeError, match="dtype"):
            k.dequantize(blob, "Q4_0", torch.float32, out=torch.empty(2, 64, dtype=torch.float16))

    def test_get_rows_shape_checks(self):
        k = hub_kernel()
        with pytest.raises(ValueError, match="blocks must be"):
            k.get_rows(torch.zeros(2, 18, dtype=torch.uint8), torch.tensor([0]), "Q4_0", 64)
        with pytest.raises(TypeError, match="integer"):
            k.get_rows(torch.zeros(2, 18, dtype=torch.uint8), torch.tensor([0.0]), "Q4_0", 32)
        with pytest.raises(IndexError):
            k.get_rows(torch.zeros(2, 18, dtype=torch.uint8), torch.tensor([2]), "Q4_0", 32)


def test_torch_compile_traces_every_op():
    k = hub_kernel()
    blob = torch.from_numpy(testing.random_blocks("Q8_0", 16, np.random.default_rng(8)).reshape(4, -1))
    torch.library.opcheck(k.ops.dequantize, (blob, 8, torch.bfloat16))

    @torch.compile(fullgraph=True, backend="eager")
    def f(b):
        return k.ops.dequantize(b, 8, torch.bfloat16) * 2

    testing.assert_bits_equal(f(blob), reference.dequantize(blob, "Q8_0", torch.bfloat16) * 2)



@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_large_random_bytes_match_reference(name, dtype):
    """Arbitrary bytes (NaN, infinite and subnormal scales and values included) in amounts that reach every
    loop of the CPU backend: the float types' 64-element vector conversions and their tails, the staged
    half/bfloat groups of the small-block types and the blocks after the last whole group, the bfloat
    subnormal fallback, and the split of the work between threads."""
    k = hub_kernel()
    t = resolve(name)
    n_blocks = 70_001 if t.block_elems == 1 else 70_000 // t.block_elems + 5
    raw = np.random.default_rng(t.id).integers(0, 256, n_blocks * t.block_bytes, dtype=np.uint8)
    blob = torch.from_numpy(raw)
    testing.assert_bits_equal(k.dequantize(blob, t.id, dtype), reference.dequantize(blob, name, dtype),
                              f"{name} -> {dtype}, {n_blocks} blocks")

def test_abi():
    import kernel_abi_check

    hub_kernel()
    from gguf_dequant import local_build

    [so] = (ROOT / "build" / local_build.variant_name()).glob("*.so")
    obj = kernel_abi_check.ObjectFile(str(so))
    assert list(obj.check_python_abi("3.9")) == [], "not abi3"
    violations = list(obj.check_manylinux("manylinux_2_28"))
    assert violations == [], violations


def test_baseline_isa_build_matches_too():
    """The baseline build serves every dtype on CPUs without AVX2/F16C; force it in a fresh process."""
    import os
    import subprocess
    import sys

    hub_kernel()
    env = dict(os.environ, GGUF_DEQUANT_CPU_ISA="baseline", GGUF_HYPOTHESIS_EXAMPLES="15")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_hub_package.py", "-k", "parity"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "84 passed" in proc.stdout, proc.stdout[-500:]


def test_more_than_2_pow_31_elements():
    """64-bit sizes and indices: 2^31 + 2^20 Q4_0 elements (1.2 GB in, 4 GB of bfloat16 out)."""
    k = hub_kernel()
    pattern = testing.random_blocks("Q4_0", 1024, np.random.default_rng(9))  # 32768 elements
    n_elems = (1 << 31) + (1 << 20)
    reps = n_elems // (1024 * 32)
    blob = torch.from_numpy(pattern.reshape(-1)).repeat(reps)
    out = k.dequantize(blob, "Q4_0", torch.bfloat16)
    assert out.shape == (n_elems,)
    expected = reference.dequantize(torch.from_numpy(pattern.reshape(-1)), "Q4_0", torch.bfloat16)
    period = expected.numel()
    for start in (0, (1 << 31) - period, (1 << 31), n_elems - period):
        testing.assert_bits_equal(out[start:start + period], expected, f"period at {start}")
    del out, blob
