"""IQ2_S: 256 elements in 82 bytes: d (half) @0, qs[64] @2 (32 grid-index bytes, then 32 sign bytes),
qh[8] @66, scales[8] @74. Group g, sub-group l (0..3, 8 elements): index qs[4g + l] | ((qh[g] >> 2l) & 3) << 8
into iq2s_grid (8 values); sign byte qs[32 + 4g + l] (bit j set -> element j negated). scales as IQ2_XS:
db = d * (0.5 + s) * 0.25 (low nibble: first 16 elements of the group, high: last 16); y = db * grid * sign."""

import torch

from ._fields import cached_per_device, f16, grid, u8
from .iq2_xxs import rows, sign_bits


@cached_per_device
def byte_sign_values(device: torch.device) -> torch.Tensor:
    """(256, 8) float32 +-1: the signs a plain sign byte gives its 8 elements."""
    return sign_bits(torch.arange(256, dtype=torch.int32, device=device))


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    qs = u8(blocks, 2, 34).view(-1, 8, 4)
    signs = u8(blocks, 34, 66).view(-1, 16, 2)
    qh = u8(blocks, 66, 74)
    sc = u8(blocks, 74, 82)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=dev)
    idx = (qs | (((qh.unsqueeze(-1) >> shifts) & 3) << 8)).view(-1, 16, 2)
    s = torch.stack([sc & 0xF, sc >> 4], dim=-1).view(-1, 16).to(torch.float32)
    db = (d * (0.5 + s) * 0.25).view(-1, 16, 1, 1)
    g = rows(grid("iq2s", dev), idx)                     # (n, 16, 2, 8)
    sg = rows(byte_sign_values(dev), signs)
    return g.mul_(db).mul_(sg).view(-1, 256)            # in place: (g * db) * sign
