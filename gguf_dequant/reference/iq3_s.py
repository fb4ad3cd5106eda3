"""IQ3_S: 256 elements in 110 bytes: d (half) @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106.
Group g: 8 indices qs[8g + i] | ((qh[g] >> i) & 1) << 8 into iq3s_grid (4 values each); sign byte
signs[4g + l] for elements 8l..8l+7 (bit j set -> negated); s = low nibble of scales[g / 2] for even g,
high nibble for odd g; db = d * (1 + 2s); y = db * grid * sign (ggml's order)."""

import torch

from ._fields import f16, grid, u8
from .iq2_s import byte_sign_values
from .iq2_xxs import rows


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    qs = u8(blocks, 2, 66).view(-1, 8, 8)
    qh = u8(blocks, 66, 74)
    signs = u8(blocks, 74, 106).view(-1, 8, 4)
    sc = u8(blocks, 106, 110)
    bit = torch.arange(8, dtype=torch.int32, device=dev)
    idx = qs | (((qh.unsqueeze(-1) >> bit) & 1) << 8)
    s = torch.stack([sc & 0xF, sc >> 4], dim=-1).view(-1, 8)
    db = (d * (1 + 2 * s).to(torch.float32)).view(-1, 8, 1, 1)
    g = rows(grid("iq3s", dev), idx).view(-1, 8, 4, 8)
    sg = rows(byte_sign_values(dev), signs)
    return g.mul_(db).mul_(sg).view(-1, 256)            # in place: (g * db) * sign
