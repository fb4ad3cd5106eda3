"""The pure-torch reference against llama.cpp's own C code (libggml-base through ctypes), bit for bit.

ggml is the only oracle for Q1_0 and Q2_0 (gguf-py 0.19 cannot decode them) and the primary one for the
rest. Skipped with the reason when the library is not built (tools/build_ggml.sh), unless
GGUF_REQUIRE_GGML=1, which turns the skip into a failure (CI sets it).
"""

import functools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gguf_dequant import reference, testing
from gguf_dequant.oracles import ggml
from gguf_dequant.types import _REFUSED, GGML_TYPE_COUNT, SUPPORTED, resolve

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES, implemented, skip_unless_built

pytestmark = pytest.mark.ggml

ROWS, N_PER_ROW = 8, 512  # small: ggml's IQ quantizers are slow


@pytest.fixture(autouse=True)
def _need_ggml():
    skip_unless_built(None if ggml.available() else ggml.why_unavailable())


def _need_reference(name: str) -> None:
    if not implemented(name):
        pytest.skip(f"reference/{name.lower()}.py not written yet")


def _ggml_f32(name: str, raw: np.ndarray) -> np.ndarray:
    """ggml's float32 values of whole blocks; F32 has no to_float, its bytes are the values."""
    t = resolve(name)
    if name == "F32":
        return np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype=np.float32).copy()
    return ggml.to_float(t.id, raw)


@functools.cache
def _quantized(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian rows quantized by ggml, and ggml's dequantization of them (computed once per type)."""
    t = resolve(name)
    rng = np.random.default_rng(1234 + t.id)
    x = rng.standard_normal((ROWS, N_PER_ROW)).astype(np.float32)
    raw = ggml.quantize(t.id, x)
    assert raw.shape == (ROWS, N_PER_ROW // t.block_elems * t.block_bytes)
    return raw, _ggml_f32(name, raw).reshape(ROWS, N_PER_ROW)


def test_type_traits_agree_with_registry():
    for type_id in range(GGML_TYPE_COUNT):
        tr = ggml.type_traits(type_id)
        if type_id in SUPPORTED:
            t = SUPPORTED[type_id]
            assert tr.name.upper() == t.name, (type_id, tr.name, t.name)
            assert (tr.blck_size, tr.type_size) == (t.block_elems, t.block_bytes), t.name
            assert ggml.row_size(type_id, 2 * t.block_elems) == 2 * t.block_bytes
            # every supported type but F32 (whose values are its bytes) has a to_float
            assert tr.has_to_float == (t.name != "F32"), t.name
        else:
            assert type_id in _REFUSED
            assert not tr.has_to_float or tr.type_size == 0, (type_id, tr)
    assert len(SUPPORTED) == 28


@pytest.mark.parametrize("type_id", [0, 9, 15, 24, 28, 4, 31, 36])
def test_refuses_null_to_float(type_id):
    with pytest.raises(ValueError):
        ggml.to_float(type_id, b"\0" * 64)


@pytest.mark.parametrize("type_id", [9, 15, 24, 27, 28, 5, 33, 38])
def test_refuses_quantize_that_would_abort(type_id):
    with pytest.raises(ValueError):
        ggml.quantize(type_id, np.zeros((1, 256), np.float32))


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_ggml_quantized_gaussian(name, dtype):
    _need_reference(name)
    raw, expected_f32 = _quantized(name)
    got = reference.dequantize(torch.from_numpy(raw.copy()), name, dtype)
    expected = torch.from_numpy(expected_f32).to(dtype)
    assert got.shape == expected.shape and got.dtype == dtype
    testing.assert_bits_equal(got, expected, f"{name} -> {dtype} (ggml-quantized)")


@pytest.mark.parametrize("name", ALL_TYPES)
@given(data=st.data())
def test_random_bytes(name, data):
    _need_reference(name)
    t = resolve(name)
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=8))
    dtype = data.draw(st.sampled_from(OUT_DTYPES))
    blob = np.frombuffer(raw, dtype=np.uint8).copy()
    expected = torch.from_numpy(_ggml_f32(name, blob)).to(dtype)
    got = reference.dequantize(torch.from_numpy(blob), name, dtype)
    assert got.shape == (len(raw) // t.block_bytes * t.block_elems,)
    testing.assert_bits_equal(got, expected, f"{name} -> {dtype} (random bytes)")


@pytest.mark.parametrize("name", ALL_TYPES)
def test_chunked_against_ggml(name, monkeypatch):
    """Several chunks and a ragged last one (finite-scale random blocks) against ggml."""
    _need_reference(name)
    t = resolve(name)
    monkeypatch.setattr(reference, "CHUNK_ELEMS", 4 * max(t.block_elems, 64))
    raw = testing.random_blocks(name, 4 * 9 + 3, np.random.default_rng(7 + t.id)).reshape(1, -1)
    got = reference.dequantize(torch.from_numpy(raw.copy()), name)
    testing.assert_bits_equal(got.reshape(-1), torch.from_numpy(_ggml_f32(name, raw)), f"{name} chunked")
