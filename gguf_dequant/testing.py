"""Helpers shared by the test suites and benchmarks: NaN-aware bit comparison and block generators.

Floats are compared bit for bit: two values agree when their bit patterns are equal or both are NaN.
Blocks come from hypothesis (random bytes with scale fields forced to special values) or from numpy
generators (random and finite-scale bytes) for the benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch

from .types import QuantType, resolve

# Special half-precision scale values as bit patterns: +-0, smallest subnormal, a larger subnormal, the
# smallest normal, 1, -2.5, 8190, 8200, the largest finite value, +-inf, NaN (formats.md, oracles.md section 6).
SPECIAL_HALF_BITS = (
    0x0000, 0x8000, 0x0001, 0x0032, 0x0400, 0x1114, 0x3C00, 0xC100, 0x6FFF, 0x7001,
    0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01,
)
SPECIAL_E8M0 = (0, 1, 2, 126, 127, 128, 254, 255)
SPECIAL_UE4M3 = (0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0x7F, 0x80, 0xFF)


def _int_view(a: np.ndarray) -> np.ndarray:
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def to_numpy_bits(x) -> np.ndarray:
    """float32/float16/bfloat16 tensor or array -> unsigned integer bit patterns (numpy)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().contiguous()
        if x.dtype == torch.bfloat16:
            return x.view(torch.int16).numpy().view(np.uint16)
        x = x.numpy()
    return _int_view(np.ascontiguousarray(x))


def isnan_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return torch.isnan(x.detach().cpu()).numpy()
    return np.isnan(x)


def bits_mismatch(actual, expected) -> np.ndarray:
    """Boolean mask of elements whose bits differ and are not both NaN."""
    a, e = to_numpy_bits(actual), to_numpy_bits(expected)
    if a.shape != e.shape or a.dtype != e.dtype:
        raise AssertionError(f"shape/dtype differ: {a.shape} {a.dtype} vs {e.shape} {e.dtype}")
    return (a != e) & ~(isnan_np(actual) & isnan_np(expected))


def assert_bits_equal(actual, expected, what: str = "") -> None:
    """Assert bit-for-bit equality, NaN-aware; on failure report the first differing elements."""
    bad = bits_mismatch(actual, expected)
    if bad.any():
        idx = np.argwhere(bad)[:5]
        a = actual.detach().cpu().float().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
        e = expected.detach().cpu().float().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
        shown = ", ".join(f"{tuple(i)}: {a[tuple(i)]!r} != {e[tuple(i)]!r}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ; first: {shown}")


def round_to(ref_f32, dtype: torch.dtype) -> torch.Tensor:
    """The float32 reference rounded once (to nearest even) to ``dtype``: what every backend must return."""
    t = torch.as_tensor(ref_f32)
    assert t.dtype == torch.float32
    return t.to(dtype)


# Where each type keeps its scale fields, as (byte offset, kind) pairs; kind is "f16", "e8m0", "ue4m3"
# or "iq1m" (IQ1_M's half scale, spread over the top nibbles of four u16 words at byte 48).
SCALE_FIELDS: dict[str, tuple[tuple[int, str], ...]] = {
    "F32": (), "F16": ((0, "f16"),), "BF16": (),
    "Q4_0": ((0, "f16"),), "Q4_1": ((0, "f16"), (2, "f16")), "Q5_0": ((0, "f16"),),
    "Q5_1": ((0, "f16"), (2, "f16")), "Q8_0": ((0, "f16"),),
    "Q2_K": ((80, "f16"), (82, "f16")), "Q3_K": ((108, "f16"),), "Q4_K": ((0, "f16"), (2, "f16")),
    "Q5_K": ((0, "f16"), (2, "f16")), "Q6_K": ((208, "f16"),),
    "IQ2_XXS": ((0, "f16"),), "IQ2_XS": ((0, "f16"),), "IQ2_S": ((0, "f16"),),
    "IQ3_XXS": ((0, "f16"),), "IQ3_S": ((0, "f16"),), "IQ1_S": ((0, "f16"),), "IQ1_M": ((48, "iq1m"),),
    "IQ4_NL": ((0, "f16"),), "IQ4_XS": ((0, "f16"),), "TQ1_0": ((52, "f16"),), "TQ2_0": ((64, "f16"),),
    "MXFP4": ((0, "e8m0"),), "NVFP4": ((0, "ue4m3"), (1, "ue4m3"), (2, "ue4m3"), (3, "ue4m3")),
    "Q1_0": ((0, "f16"),), "Q2_0": ((0, "f16"),),
}


def set_scale(block: bytearray, offset: int, kind: str, value: int) -> None:
    """Write a raw scale bit pattern ``value`` into one block."""
    if kind == "f16":
        block[offset:offset + 2] = int(value & 0xFFFF).to_bytes(2, "little")
    elif kind in ("e8m0", "ue4m3"):
        block[offset] = value & 0xFF
    elif kind == "iq1m":
        for k in range(4):  # word k carries bits 4k..4k+3 of d in its top nibble
            hi = offset + 2 * k + 1
            block[hi] = (block[hi] & 0x0F) | (((value >> (4 * k)) & 0xF) << 4)
    else:
        raise ValueError(kind)


def finite_scales(raw: np.ndarray, qtype) -> np.ndarray:
    """Make every scale field of (n_blocks, block_bytes) random blocks finite, in place; returns raw."""
    t = resolve(qtype)
    for offset, kind in SCALE_FIELDS[t.name]:
        if kind == "f16":
            raw[:, offset + 1] &= 0xBF  # clear bit 6 of the high byte: exponent < 31, |d| < 2
        elif kind == "e8m0":
            raw[:, offset] = 120 + raw[:, offset] % 15
        elif kind == "ue4m3":
            raw[:, offset] &= 0x7F
        elif kind == "iq1m":
            raw[:, offset + 7] &= 0xBF  # the half's high byte sits in the top nibbles of words 2 and 3
    if t.name == "F32":
        raw.view(np.uint32)[...] &= ~np.uint32(1 << 30)
    elif t.name == "BF16":
        raw.view(np.uint16)[...] &= ~np.uint16(1 << 14)
    elif t.name == "F16":
        pass  # handled by SCALE_FIELDS
    return raw


def random_blocks(qtype, n_blocks: int, rng: np.random.Generator, finite: bool = True) -> np.ndarray:
    """(n_blocks, block_bytes) uint8 random blocks, scales made finite unless ``finite`` is False."""
    t: QuantType = resolve(qtype)
    raw = rng.integers(0, 256, size=(n_blocks, t.block_bytes), dtype=np.uint8)
    return finite_scales(raw, t) if finite else raw


def hypothesis_blocks(qtype, max_blocks: int = 8, min_blocks: int = 0):
    """Hypothesis strategy: bytes of ``n`` whole blocks, some scale fields forced to special values."""
    from hypothesis import strategies as st

    t = resolve(qtype)
    fields = SCALE_FIELDS[t.name]

    @st.composite
    def build(draw):
        n = draw(st.integers(min_blocks, max_blocks))
        data = bytearray(draw(st.binary(min_size=n * t.block_bytes, max_size=n * t.block_bytes)))
        if n and fields:
            for _ in range(draw(st.integers(0, 2 * n))):
                blk = draw(st.integers(0, n - 1))
                offset, kind = draw(st.sampled_from(fields))
                specials = {"f16": SPECIAL_HALF_BITS, "iq1m": SPECIAL_HALF_BITS,
                            "e8m0": SPECIAL_E8M0, "ue4m3": SPECIAL_UE4M3}[kind]
                value = draw(st.sampled_from(specials))
                block = bytearray(data[blk * t.block_bytes:(blk + 1) * t.block_bytes])
                set_scale(block, offset, kind, value)
                data[blk * t.block_bytes:(blk + 1) * t.block_bytes] = block
        return bytes(data)

    return build()
