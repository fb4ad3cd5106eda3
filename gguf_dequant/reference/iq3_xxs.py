"""IQ3_XXS: 256 elements in 98 bytes: d (half) @0, qs[64] @2 (grid indices), 8 little-endian u32 words
@66 (one per group of 32). Group g: bytes qs[8g .. 8g+7] index iq3xxs_grid (4 values each); word g has
the ksigns_iq2xs index of 8-element sub-group l in bits 7l..7l+6 and ls in bits 28..31.
db = d * (0.5 + ls) * 0.5; y = db * grid * sign (ggml's order)."""

import torch

from ._fields import f16, grid, u8
from .iq2_xxs import ksign_values, rows


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    qs = u8(blocks, 2, 66).view(-1, 8, 8)
    sw = u8(blocks, 66, 98).view(-1, 8, 4)
    w = sw[:, :, 0] | (sw[:, :, 1] << 8) | (sw[:, :, 2] << 16) | (sw[:, :, 3] << 24)
    shifts = torch.tensor([0, 7, 14, 21], dtype=torch.int32, device=dev)
    sidx = (w.unsqueeze(-1) >> shifts) & 127            # (n, 8, 4)
    ls = (sw[:, :, 3] >> 4).to(torch.float32)
    db = (d * (0.5 + ls) * 0.5).view(-1, 8, 1, 1)
    g = rows(grid("iq3xxs", dev), qs).view(-1, 8, 4, 8)  # two 4-value rows per 8 elements
    sg = rows(ksign_values(dev), sidx)
    return g.mul_(db).mul_(sg).view(-1, 256)            # in place: (g * db) * sign
