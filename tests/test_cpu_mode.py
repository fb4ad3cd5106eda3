"""Every kernel file compiled as plain C++ (the CPU backend's mode) against the reference, bit for bit."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gguf_dequant import reference, testing
from gguf_dequant.tools import cpu_mode

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
@given(data=st.data())
def test_cpu_mode_matches_reference(name, dtype, data):
    if not cpu_mode.kernel_file(name).exists():
        pytest.skip(f"{cpu_mode.kernel_file(name).name} not written yet")
    lib = cpu_mode.compile_type(name)
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=8))
    blob = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    expected = reference.dequantize(blob, name, dtype)
    testing.assert_bits_equal(cpu_mode.run(lib, name, raw, dtype), expected, f"{name} -> {dtype}")
