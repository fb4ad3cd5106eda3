"""Fast math cannot change a result: every kernel, built by the shader harness in flush-to-zero mode
(``msl_harness.compile(path, ftz=True)``: clang's ``-fdenormal-fp-math=preserve-sign`` and MXCSR FTZ|DAZ
while it runs, so a subnormal float operand reads as zero and a subnormal result becomes zero, as Metal's
fast math may do), decodes blocks full of subnormal scales and inputs bit for bit like the IEEE reference.
The CPU backend does the same under ``torch.set_flush_denormal(True)``.

The one allowed difference: an output whose exact value is itself subnormal in the output dtype may come
back as a zero of the same sign. Which outputs those are, by nature of the formats:
- float32 output: MXFP4 values k * 2^(e-128) below 2^-126 (E8M0 e = 0 with |k| <= 3, e = 1 with |k| = 1).
  F32 and BF16 inputs that are subnormal are copied bit for bit, so they come back exact.
- float16 output: any value below 2^-14 (small half scales times small quants, the F16 subnormals, tiny
  F32/BF16 inputs): the conversion to half rounds into half's subnormal range.
- bfloat16 output: values below 2^-126 (the MXFP4 ones above, F32 and BF16 subnormal inputs).
Everything else (all half-scaled types, NVFP4 with its smallest UE4M3 scales, K-quants with subnormal d
and dmin) has no subnormal float32 anywhere: half values are multiples of 2^-24 and every factor in the
formats keeps products above 2^-30, far from float32's subnormals.
"""

import numpy as np
import pytest
import torch

from gguf_dequant import launch, reference
from gguf_dequant.testing import SCALE_FIELDS, bits_mismatch, random_blocks, set_scale, to_numpy_bits
from gguf_dequant.types import BY_NAME
from harness import msl_harness

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES
from .hub import hub_kernel

needs_clang = pytest.mark.skipif(not msl_harness.available(), reason="clang-19 is not installed")

# Subnormal halves (+-, smallest to largest), the smallest normals; E8M0 exponents whose scale 2^(e-128)
# is subnormal (0, 1) or barely normal; UE4M3 bytes with exponent field 0 (man * 2^-9) and just above.
TINY = {
    "f16": (0x0001, 0x0002, 0x0003, 0x0032, 0x01FF, 0x03FF, 0x8001, 0x83FF, 0x0400, 0x0401),
    "iq1m": (0x0001, 0x0003, 0x03FF, 0x8001, 0x0400),
    "e8m0": (0, 1, 2, 3),
    "ue4m3": (0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x09, 0x81),
}
_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}
_SUFFIX = dict(zip(OUT_DTYPES, DTYPE_IDS))


def _f32_inputs(rng) -> np.ndarray:
    """Subnormal float32 bit patterns (random and at the edges, e.g. 0x007FFF80 rounds up to the smallest
    normal bfloat16), both signs, then the smallest normals and random normal values."""
    edges = np.array([0x00000001, 0x00000002, 0x00400000, 0x007FFF7F, 0x007FFF80, 0x007FFFFF,
                      0x00800000, 0x00800001, 0x3F800000], np.uint32)
    sub = rng.integers(1, 1 << 23, size=1000, dtype=np.uint32)
    normal = rng.integers(0, 1 << 32, size=500, dtype=np.uint32) & np.uint32(0xBFFFFFFF)
    bits = np.concatenate([edges, sub, normal])
    return np.concatenate([bits, bits | np.uint32(0x80000000)]).view(np.uint8)


def tiny_blocks(name: str, rng) -> np.ndarray:
    """Raw bytes of blocks whose scale fields (or, for the float types, values) are subnormal or tiny."""
    if name == "F32":
        return _f32_inputs(rng)
    if name in ("F16", "BF16"):
        return np.arange(1 << 16, dtype=np.uint16).view(np.uint8)  # every bit pattern
    fields = SCALE_FIELDS[name]
    values = TINY[fields[0][1]]
    rows = []
    for v in values:
        every = random_blocks(name, 3, rng)  # all scale fields tiny
        one = random_blocks(name, 3, rng)    # one tiny field beside random finite ones (e.g. d tiny, dmin not)
        for i in range(3):
            block = bytearray(every[i].tobytes())
            for offset, kind in fields:
                set_scale(block, offset, kind, v)
            rows.append(np.frombuffer(bytes(block), np.uint8))
            block = bytearray(one[i].tobytes())
            offset, kind = fields[i % len(fields)]
            set_scale(block, offset, kind, v)
            rows.append(np.frombuffer(bytes(block), np.uint8))
    return np.concatenate(rows)


def run_ftz(name: str, raw: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = BY_NAME[name]
    n = raw.size // t.block_bytes * t.block_elems
    lib = msl_harness.compile(msl_harness.kernel_file(name), ftz=True)
    threads, group = launch.grid(name, n)
    res = lib.dispatch_threads(f"dequantize_{name.lower()}_{_SUFFIX[dtype]}", [raw, np.empty(n, _NP[dtype]),
                               np.uint64(n)], threads, group)
    out = torch.from_numpy(np.ascontiguousarray(res.buffers[1]).copy())
    return out.view(torch.bfloat16) if dtype == torch.bfloat16 else out


def subnormal(x: torch.Tensor) -> torch.Tensor:
    """Nonzero and below the smallest normal of x's dtype."""
    a = x.float().abs()
    return (a > 0) & (a < torch.finfo(x.dtype).tiny)


def assert_only_subnormals_flushed(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    bad = torch.from_numpy(bits_mismatch(got, expected))
    allowed = subnormal(expected)
    wrong = bad & ~allowed
    assert not wrong.any(), (
        f"{what} under flush-to-zero: {int(wrong.sum())} of {wrong.numel()} elements with a normal "
        f"(or zero) exact result differ, e.g. got {got[wrong][:4].tolist()} for {expected[wrong][:4].tolist()}")
    # A subnormal result may only be flushed: to a zero of its own sign.
    flushed = bad & allowed
    sign = np.uint32(1) << np.uint32(8 * expected.element_size() - 1)
    g, e = to_numpy_bits(got[flushed]).astype(np.uint32), to_numpy_bits(expected[flushed]).astype(np.uint32)
    assert (g == (e & sign)).all(), f"{what}: subnormal results replaced by something other than 0"


@pytest.mark.msl
@needs_clang
@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_flush_to_zero_changes_no_normal_result(name, dtype):
    raw = tiny_blocks(name, np.random.default_rng(11))
    expected = reference.dequantize(torch.from_numpy(raw.copy()), name, dtype)
    assert_only_subnormals_flushed(run_ftz(name, raw, dtype), expected, f"harness {name} -> {dtype}")


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_cpu_backend_under_torch_flush_denormal(name, dtype):
    """The CPU backend compiles the same decode functions; torch.set_flush_denormal(True) (a common speed
    setting) turns on FTZ|DAZ for the calling thread, which runs the whole launch with one torch thread."""
    k = hub_kernel()
    raw = torch.from_numpy(tiny_blocks(name, np.random.default_rng(12)))
    expected = reference.dequantize(raw, name, dtype)
    threads = torch.get_num_threads()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        torch.set_num_threads(1)
        assert (torch.tensor([2.0**-130]) * 2.0).item() == 0.0, "flush-to-zero is not in effect"
        got = k.dequantize(raw, name, dtype)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    assert_only_subnormals_flushed(got, expected, f"CPU backend {name} -> {dtype}")


@pytest.mark.msl
@needs_clang
def test_the_fixtures_reach_the_hard_cases():
    """The fixtures hold normal results built from subnormal scales (MXFP4 E8M0 0 and 1; half-subnormal d)
    and outputs that are subnormal by nature, so the test above can fail both ways."""
    rng = np.random.default_rng(11)
    mx = reference.dequantize(torch.from_numpy(tiny_blocks("MXFP4", rng)), "MXFP4").reshape(-1, 32)
    mx_scale_sub = torch.from_numpy(tiny_blocks("MXFP4", np.random.default_rng(11)).reshape(-1, 17)[:, 0] < 2)
    normal = (mx.abs() >= torch.finfo(torch.float32).tiny)
    assert (normal & mx_scale_sub[:, None]).any() and subnormal(mx).any()
    q4k = reference.dequantize(torch.from_numpy(tiny_blocks("Q4_K", rng)), "Q4_K")
    assert subnormal(q4k.to(torch.float16)).any() and (q4k.abs() > 0).any() and not subnormal(q4k).any()
