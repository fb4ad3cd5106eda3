"""TQ1_0: 256 elements in 54 bytes: qs[48] @0 (5 base-3 digits per byte), qh[4] @48 (4 digits per byte),
d (half) @52. Digit n of byte b is t = (((b * 3^n) & 0xFF) * 3) >> 8 in {0, 1, 2}; y = (t - 1) * d.
Order: qs[0..31] x 5 digits -> elements 32n + m; qs[32..47] x 5 digits -> 160 + 16n + m;
qh[0..3] x 4 digits -> 240 + 4n + m.

(t - 1) is looked up in a 5 x 256 table indexed by digit and byte (exact small integers as float32), then
multiplied by d: the same single rounding as ggml's ``(float)(xi - 1) * d``."""

import functools

import numpy as np
import torch

from ._fields import f16, u8


def digit_table() -> np.ndarray:
    """(5 * 256,) float32: entry 256n + b is digit n of byte b, minus 1."""
    b = np.arange(256)
    return np.concatenate([(((b * 3 ** n) & 0xFF) * 3 >> 8) - 1 for n in range(5)]).astype(np.float32)


@functools.cache
def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.arange(0, 5 * 256, 256, dtype=torch.int32, device=device).view(1, 5, 1)
    return torch.from_numpy(digit_table()).to(device), offsets


def decode(blocks: torch.Tensor) -> torch.Tensor:
    tab, off = _tables(blocks.device)
    b = u8(blocks, 0, 52)
    idx = torch.cat([(b[:, None, 0:32] + off).view(-1, 160),          # 32n + m
                     (b[:, None, 32:48] + off).view(-1, 80),          # 160 + 16n + m
                     (b[:, None, 48:52] + off[:, 0:4]).view(-1, 16)],  # 240 + 4n + m
                    dim=1)
    t = tab.index_select(0, idx.view(-1)).view(-1, 256)
    return t * f16(blocks, 52)
