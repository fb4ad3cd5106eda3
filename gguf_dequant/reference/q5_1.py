"""Q5_1: 32 elements in 24 bytes: d (half) @0, m (half) @2, qh (LE u32) @4, qs[16] @8. 5-bit q as Q5_0;
y = q * d + m (product rounded, then the sum)."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dm = f16(blocks, 0, 2)
    dev = blocks.device
    nib = torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 2, 1)
    bits = torch.arange(8, dtype=torch.int32, device=dev)
    q = (u8(blocks, 8, 24).unsqueeze(1) >> nib).bitwise_and_(0xF).view(-1, 32)
    # Element 8k + i takes bit i of qh[k] as bit 4: ((byte << 4) >> i) & 16.
    h = ((u8(blocks, 4, 8) << 4).unsqueeze(-1) >> bits).bitwise_and_(16).view(-1, 32)
    return (q.bitwise_or_(h) * dm[:, 0:1]).add_(dm[:, 1:2])
