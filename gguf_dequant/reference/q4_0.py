"""Q4_0: 32 elements in 18 bytes: d (half) @0, qs[16] @2. Element j < 16 is lo(qs[j]), j >= 16 is
hi(qs[j-16]); y = (q - 8) * d."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    d = f16(blocks, 0)
    qs = u8(blocks, 2, 18)
    q = torch.cat([qs & 0xF, qs >> 4], dim=1)
    return (q - 8).to(torch.float32) * d
