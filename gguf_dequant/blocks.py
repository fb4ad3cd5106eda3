"""Random GGUF blocks with finite scales, and NaN-aware bit comparison of float tensors.

What the run-time package needs of them: the backend self-check (``gguf_dequant.backends``) decodes random
blocks with a compiled backend and compares the bits with the reference; ``gguf-dequant bench`` times random
blocks. The test helpers (``gguf_dequant.testing``, not shipped in the wheel) build on these.
"""

from __future__ import annotations

import numpy as np
import torch

from .types import QuantType, resolve


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
