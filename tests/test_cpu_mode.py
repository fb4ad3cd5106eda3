"""Every kernel file compiled as plain C++ (the CPU backend's mode) against the reference, bit for bit."""

import platform

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gguf_dequant import reference, testing
from gguf_dequant.tools import cpu_mode

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES


# The baseline build, and on x86-64 the AVX2 + F16C one (hardware float16 conversion, vector bf16 rounding)
# that cpu/kernels_avx2.cpp compiles.
ISAS = {"baseline": ()}
if platform.machine() in ("x86_64", "AMD64"):
    ISAS["avx2"] = ("-mavx2", "-mf16c")


@pytest.mark.parametrize("isa", list(ISAS))
@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
@given(data=st.data())
def test_cpu_mode_matches_reference(name, dtype, isa, data):
    lib = cpu_mode.compile_type(name, ISAS[isa])
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=8))
    blob = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    expected = reference.dequantize(blob, name, dtype)
    testing.assert_bits_equal(cpu_mode.run(lib, name, raw, dtype), expected, f"{name} -> {dtype}")
