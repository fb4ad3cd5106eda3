"""Q4_1: 32 elements in 20 bytes: d (half) @0, m (half) @2, qs[16] @4. Element j < 16 is lo(qs[j]),
j >= 16 is hi(qs[j-16]); y = q * d + m (product rounded, then the sum)."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dm = f16(blocks, 0, 2)
    qs = u8(blocks, 4, 20)
    shifts = torch.tensor([0, 4], dtype=torch.int32, device=blocks.device).view(1, 2, 1)
    q = ((qs.unsqueeze(1) >> shifts) & 0xF).reshape(-1, 32)
    return q.to(torch.float32) * dm[:, 0:1] + dm[:, 1:2]
