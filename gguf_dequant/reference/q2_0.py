"""Q2_0: 64 elements in 18 bytes: d (half) @0, qs[16] @2 (2 bits per element, LSB first). Element j is
q = (qs[j / 4] >> 2 (j % 4)) & 3, codes 0..3 meaning -1, 0, +1, +2; y = (q - 1) * d.

A (256, 4) table gives (q - 1) as float32 for the four elements of each byte, in element order; one
multiplication by d then rounds exactly as ggml's ``((int)q - 1) * d``."""

import functools

import numpy as np
import torch

from ._fields import f16, u8


def code_table() -> np.ndarray:
    """(256, 4) float32: entry [b, k] is ((b >> 2k) & 3) - 1."""
    b = np.arange(256)[:, None]
    return (((b >> (2 * np.arange(4))) & 3) - 1).astype(np.float32)


@functools.cache
def _table(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(code_table()).to(device)


def decode(blocks: torch.Tensor) -> torch.Tensor:
    q = _table(blocks.device).index_select(0, u8(blocks, 2, 18).view(-1)).view(-1, 64)
    return q * f16(blocks, 0)
