"""Helpers shared by the test suites and benchmarks: NaN-aware bit comparison and block generators
(development tooling, not shipped in the wheel; what the run-time package needs is in ``gguf_dequant.blocks``).

Floats are compared bit for bit: two values agree when their bit patterns are equal or both are NaN.
Blocks come from hypothesis (random bytes with scale fields forced to special values) or from numpy
generators (random and finite-scale bytes) for the benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch

from .blocks import (SCALE_FIELDS, bits_mismatch, finite_scales, isnan_np,  # noqa: F401 - the tests' names
                     random_blocks, to_numpy_bits)
from .types import resolve

# Special half-precision scale values as bit patterns: +-0, smallest subnormal, a larger subnormal, the
# smallest normal, 1, -2.5, 8190, 8200, the largest finite value, +-inf, NaN (formats.md, oracles.md section 6).
SPECIAL_HALF_BITS = (
    0x0000, 0x8000, 0x0001, 0x0032, 0x0400, 0x1114, 0x3C00, 0xC100, 0x6FFF, 0x7001,
    0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01,
)
SPECIAL_E8M0 = (0, 1, 2, 126, 127, 128, 254, 255)
SPECIAL_UE4M3 = (0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0x7F, 0x80, 0xFF)


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
