"""Q5_1: 32 elements in 24 bytes: d (half) @0, m (half) @2, qh (LE u32) @4, qs[16] @8. 5-bit q as Q5_0;
y = q * d + m (product rounded, then the sum)."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dm = f16(blocks, 0, 2)
    qh = u8(blocks, 4, 8)
    qs = u8(blocks, 8, 24)
    dev = blocks.device
    nib = torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 2, 1)
    bits = torch.arange(8, dtype=torch.int32, device=dev)
    ql = ((qs.unsqueeze(1) >> nib) & 0xF).reshape(-1, 32)
    hi = (((qh << 4).unsqueeze(-1) >> bits) & 16).reshape(-1, 32)
    return (ql | hi).to(torch.float32) * dm[:, 0:1] + dm[:, 1:2]
