"""TQ2_0: 256 elements in 66 bytes: qs[64] @0 (2 bits per element), d (half) @64. Element
128j + 32l + m (j 0..1, l 0..3, m 0..31) has q = (qs[32j + m] >> 2l) & 3; y = (q - 1) * d."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    qs = u8(blocks, 0, 64)
    d = f16(blocks, 64)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=blocks.device).view(1, 1, 4, 1)
    q = ((qs.view(-1, 2, 1, 32) >> shifts) & 3).view(-1, 256)
    return (q - 1).to(torch.float32) * d
