"""The pure-torch reference against gguf-py, bit for bit (NaN-aware), for every type and output dtype."""

import gguf
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gguf_dequant import reference, testing
from gguf_dequant.types import resolve

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES

GGUF_PY_TYPES = [n for n in ALL_TYPES if n not in ("Q1_0", "Q2_0")]  # gguf-py 0.19 cannot decode these


def gguf_py(raw: np.ndarray, name: str) -> np.ndarray:
    if raw.size == 0:  # gguf-py cannot reshape zero blocks
        return np.zeros(raw.shape[:-1] + (0,), np.float32)
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).astype(np.float32, copy=False)


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", GGUF_PY_TYPES)
@given(data=st.data())
def test_matches_gguf_py(name, dtype, data):
    t = resolve(name)
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=8))
    rows = data.draw(st.sampled_from([1, 2, 3]))
    n = len(raw) // t.block_bytes
    if n % rows:
        rows = 1
    blob = np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1) if n else np.zeros((rows, 0), np.uint8)
    expected = torch.from_numpy(gguf_py(blob, name)).to(dtype)
    got = reference.dequantize(torch.from_numpy(blob.copy()), name, dtype)
    assert got.dtype == dtype and got.shape == expected.shape
    testing.assert_bits_equal(got, expected, f"{name} -> {dtype}")


@pytest.mark.parametrize("name", GGUF_PY_TYPES)
def test_chunked_large_tensor(name, monkeypatch):
    """Several chunks and a ragged last chunk give the same result as gguf-py on finite-scale data."""
    t = resolve(name)
    monkeypatch.setattr(reference, "CHUNK_ELEMS", 4 * max(t.block_elems, 64))
    rng = np.random.default_rng(0)
    raw = testing.random_blocks(name, 4 * 9 + 3, rng).reshape(1, -1)
    got = reference.dequantize(torch.from_numpy(raw), name)
    testing.assert_bits_equal(got, torch.from_numpy(gguf_py(raw, name)), name)


@pytest.mark.parametrize("leading", [(), (3,), (2, 3)])
def test_leading_dims(leading):
    t = resolve("Q4_K")
    rng = np.random.default_rng(1)
    raw = testing.random_blocks(t, int(np.prod(leading or (1,))) * 2, rng).reshape(*leading, 2 * t.block_bytes)
    got = reference.dequantize(torch.from_numpy(raw), t)
    assert got.shape == (*leading, 2 * t.block_elems)
    testing.assert_bits_equal(got, torch.from_numpy(gguf_py(raw, "Q4_K")))
