"""Q4_1: 32 elements in 20 bytes: d (half) @0, m (half) @2, qs[16] @4. Element j < 16 is lo(qs[j]),
j >= 16 is hi(qs[j-16]); y = q * d + m (product rounded, then the sum)."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dm = f16(blocks, 0, 2)
    shifts = torch.tensor([0, 4], dtype=torch.int32, device=blocks.device).view(1, 2, 1)
    q = (u8(blocks, 4, 20).unsqueeze(1) >> shifts).bitwise_and_(0xF).view(-1, 32)
    # int32 * float32 promotes to float32: float(q) * d, exact; then + m rounds once.
    return (q * dm[:, 0:1]).add_(dm[:, 1:2])
