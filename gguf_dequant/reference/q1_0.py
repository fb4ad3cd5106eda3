"""Q1_0: 128 elements in 18 bytes: d (half) @0, qs[16] @2 (1 bit per element, LSB first). Element j is
bit j % 8 of qs[j / 8]; y = d if the bit is set, else -d.

ggml negates d (a sign flip, NaN payloads included), so the result is d's float32 bits with the sign bit
flipped where the element's bit is clear: a (256, 8) table gives the eight sign masks of each byte, in
element order, and one xor applies them."""

import functools

import numpy as np
import torch

from ._fields import f16, u8


def sign_masks() -> np.ndarray:
    """(256, 8) int32: entry [b, k] is 0x80000000 when bit k of b is clear, else 0."""
    b = np.arange(256)[:, None]
    return np.where((b >> np.arange(8)) & 1, 0, -(1 << 31)).astype(np.int32)


@functools.cache
def _masks(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(sign_masks()).to(device)


def decode(blocks: torch.Tensor) -> torch.Tensor:
    flip = _masks(blocks.device).index_select(0, u8(blocks, 2, 18).view(-1)).view(-1, 128)
    return (flip ^ f16(blocks, 0).view(torch.int32)).view(torch.float32)
