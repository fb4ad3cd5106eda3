"""IQ2_XS: 256 elements in 74 bytes: d (half) @0, qs[32] (u16) @2, scales[8] @66. One u16 w per 8
elements: w & 511 indexes iq2xs_grid (8 values), w >> 9 indexes ksigns_iq2xs (bit j set -> element j
negated). scales[g]: low nibble for the first 16 elements of group g, high nibble for the last 16.
db = d * (0.5 + s) * 0.25; y = db * grid * sign (ggml's order)."""

import torch

from ._fields import f16, grid, u8, u16
from .iq2_xxs import ksign_values, rows


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    w = u16(blocks, 2, 32).view(-1, 16, 2)               # (n, half-group, 8-element sub-group)
    sc = u8(blocks, 66, 74)
    s = torch.stack([sc & 0xF, sc >> 4], dim=-1).view(-1, 16).to(torch.float32)
    db = (d * (0.5 + s) * 0.25).view(-1, 16, 1, 1)
    g = rows(grid("iq2xs", dev), w & 511)                # (n, 16, 2, 8)
    sg = rows(ksign_values(dev), w >> 9)
    return g.mul_(db).mul_(sg).view(-1, 256)            # in place: (g * db) * sign
