"""Q5_K: 256 elements in 176 bytes: d (half) @0, dmin (half) @2, scales[12] @4 (as Q4_K), qh[32] @16,
qs[128] @48. As Q4_K, plus a 5th bit: element l of sub-block j uses bit j of qh[l].
y = (d * sc) * q - (dmin * m)."""

import torch

from ._fields import f16, u8
from .q4_k import scale_min_k4


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dd = f16(blocks, 0, 2)
    sc, m = scale_min_k4(u8(blocks, 4, 16))
    dev = blocks.device
    nib = torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 1, 2, 1)
    q = (u8(blocks, 48, 176).view(-1, 4, 1, 32) >> nib).bitwise_and_(0xF).view(-1, 8, 32)
    # Bit j of qh[l] moved to bit 4: ((byte << 4) >> j) & 16.
    h = ((u8(blocks, 16, 48) << 4).view(-1, 1, 32)
         >> torch.arange(8, dtype=torch.int32, device=dev).view(1, 8, 1)).bitwise_and_(16)
    dl = (dd[:, 0:1] * sc).unsqueeze(-1)
    ml = (dd[:, 1:2] * m).unsqueeze(-1)
    return (q.bitwise_or_(h) * dl).sub_(ml).view(-1, 256)
