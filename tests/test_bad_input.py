"""Bad input to the reference: a clear Python exception naming the problem, never garbage."""

import numpy as np
import pytest
import torch

from gguf_dequant import UnsupportedTypeError, dequantize, testing


def test_blob_must_be_uint8():
    with pytest.raises(TypeError, match="uint8"):
        dequantize(torch.zeros(18, dtype=torch.int8), "Q4_0")
    with pytest.raises(TypeError, match="uint8"):
        dequantize(np.zeros(18, dtype=np.float32), "Q4_0")
    with pytest.raises(TypeError, match="uint8"):
        dequantize([0] * 18, "Q4_0")


@pytest.mark.parametrize("nbytes", [1, 17, 19, 35])
def test_size_not_a_multiple_of_the_block(nbytes):
    with pytest.raises(ValueError, match="18 bytes.*not a multiple"):
        dequantize(torch.zeros(nbytes, dtype=torch.uint8), "Q4_0")


def test_last_dimension_checked_not_total():
    with pytest.raises(ValueError, match="not a multiple"):
        dequantize(torch.zeros(2, 9, dtype=torch.uint8), "Q4_0")  # 18 bytes total, but rows of 9


def test_zero_dim_blob():
    with pytest.raises(ValueError, match="at least one dimension"):
        dequantize(torch.tensor(1, dtype=torch.uint8), "F16")


@pytest.mark.parametrize("qtype", [9, 15, 43, "Q8_K", "nope"])
def test_unknown_or_unsupported_type(qtype):
    with pytest.raises(UnsupportedTypeError, match=str(qtype) if isinstance(qtype, int) else repr(qtype)):
        dequantize(torch.zeros(36, dtype=torch.uint8), qtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.uint8, "float32"])
def test_unsupported_output_dtype(dtype):
    with pytest.raises(ValueError, match="output dtype"):
        dequantize(torch.zeros(18, dtype=torch.uint8), "Q4_0", dtype)


def test_out_checked():
    blob = torch.zeros(2, 36, dtype=torch.uint8)
    with pytest.raises(ValueError, match="shape"):
        dequantize(blob, "Q4_0", out=torch.empty(2, 32))
    with pytest.raises(TypeError, match="dtype"):
        dequantize(blob, "Q4_0", out=torch.empty(2, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match="contiguous"):
        dequantize(blob, "Q4_0", out=torch.empty(64, 2).t())


def test_out_is_written_and_returned():
    blob = torch.randint(0, 256, (2, 36), dtype=torch.uint8)
    blob[:, 1] &= 0xBF
    blob[:, 19] &= 0xBF
    out = torch.full((2, 64), float("nan"), dtype=torch.bfloat16)
    assert dequantize(blob, "Q4_0", torch.bfloat16, out=out) is out
    assert torch.equal(out, dequantize(blob, "Q4_0", torch.bfloat16))


def test_empty_and_non_contiguous_blobs():
    assert dequantize(torch.zeros(3, 0, dtype=torch.uint8), "Q4_K").shape == (3, 0)
    strided = torch.randint(0, 256, (4, 72), dtype=torch.uint8)[:, ::2]
    assert not strided.is_contiguous()
    testing.assert_bits_equal(dequantize(strided, "F16"), dequantize(strided.contiguous(), "F16"))
