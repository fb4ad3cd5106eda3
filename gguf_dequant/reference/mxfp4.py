"""MXFP4: 32 elements in 17 bytes: e (E8M0) @0, qs[16] @1. Element j < 16 is lo(qs[j]), j >= 16 is
hi(qs[j - 16]); y = kvalues_fp4[nibble] * s(e), kvalues_fp4 being the E2M1 values doubled and s(e) =
2^(e - 128) built from bits as ggml's ggml_e8m0_to_fp32_half does: e >= 2 -> exponent field e - 1,
e = 0 -> 2^-128 and e = 1 -> 2^-127 (f32 subnormals); 0xFF is 2^127, not NaN. Index 8 is +0."""

import functools

import numpy as np
import torch

from .. import tables
from ._fields import u8


def e8m0_half_bits(e: np.ndarray) -> np.ndarray:
    """ggml_e8m0_to_fp32_half as uint32 bit patterns, for e in 0..255."""
    e = np.asarray(e, dtype=np.uint32)
    return np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32)


def product_table() -> np.ndarray:
    """(256 * 16,) float32: entry 16e + q is kvalues_fp4[q] * s(e), the product rounded once in float32
    exactly as ggml computes it (it is exact anyway, including the subnormal and infinite cases)."""
    s = e8m0_half_bits(np.arange(256)).view(np.float32)
    kv = tables.kvalues_fp4().astype(np.float32)
    return (s[:, None] * kv[None, :]).reshape(-1)


@functools.cache
def _table(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with np.errstate(over="ignore"):
        tab = product_table()
    # the subnormal scales must survive (they would not under a flush-to-zero floating-point mode)
    assert tab.view(np.uint32)[1] == 0x00200000 and tab.view(np.uint32)[16 + 1] == 0x00400000
    return (torch.from_numpy(tab).to(device),
            torch.tensor([0, 4], dtype=torch.int32, device=device).view(1, 2, 1))


def decode(blocks: torch.Tensor) -> torch.Tensor:
    tab, shifts = _table(blocks.device)
    e = u8(blocks, 0, 1) << 4
    qs = u8(blocks, 1, 17)
    idx = ((qs.unsqueeze(1) >> shifts) & 0xF).view(-1, 32) + e  # low nibbles, then high nibbles
    return tab.index_select(0, idx.view(-1)).view(-1, 32)
