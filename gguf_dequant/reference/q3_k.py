"""Q3_K: 256 elements in 110 bytes: hmask[32] @0, qs[64] @32, scales[12] @96 (16 six-bit scales), d (half)
@108. Low 2 bits as Q2_K; element e's high bit is bit e / 32 of hmask[e % 32] (q = low2 - 4 when it is 0).
Scale i: low 4 bits lo(scales[i]) (i < 8) or hi(scales[i - 8]), high 2 bits (scales[8 + i % 4] >> 2(i / 4)) & 3.
y = (d * (sc - 32)) * q."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    sc = u8(blocks, 96, 108)
    d = f16(blocks, 108)
    dev = blocks.device
    shifts2 = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=dev)
    lo = (sc[:, 0:8].unsqueeze(1) >> torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 2, 1)) & 0xF
    hi = (sc[:, 8:12].unsqueeze(1) >> shifts2.view(1, 4, 1)) & 3
    dl = (d * ((lo.view(-1, 16) | (hi.view(-1, 16) << 4)) - 32)).unsqueeze(-1)
    q = (u8(blocks, 32, 96).view(-1, 2, 1, 32) >> shifts2.view(1, 1, 4, 1)).bitwise_and_(3)
    # q = low2 - 4 * (1 - bit): element 32k + l subtracts bit k of ~hmask[l], moved to bit 2.
    nh = ((u8(blocks, 0, 32) << 2).bitwise_not_().view(-1, 1, 32)
          >> torch.arange(8, dtype=torch.int32, device=dev).view(1, 8, 1)).bitwise_and_(4)
    q = q.view(-1, 8, 32).sub_(nh).view(-1, 16, 16)
    return (q * dl).view(-1, 256)
