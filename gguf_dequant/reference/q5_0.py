"""Q5_0: 32 elements in 22 bytes: d (half) @0, qh (LE u32) @2, qs[16] @6. Element j takes the nibble as
Q4_0 plus bit j of qh as its 5th bit; y = (q - 16) * d."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    d = f16(blocks, 0)
    dev = blocks.device
    nib = torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 2, 1)
    bits = torch.arange(8, dtype=torch.int32, device=dev)
    q = (u8(blocks, 6, 22).unsqueeze(1) >> nib).bitwise_and_(0xF).view(-1, 32)
    # q - 16 = nibble - 16 * (1 - bit): element 8k + i subtracts bit i of ~qh[k], moved to bit 4
    # (((~byte) << 4) >> i) & 16.
    nh = ((u8(blocks, 2, 6) << 4).bitwise_not_().unsqueeze(-1) >> bits).bitwise_and_(16).view(-1, 32)
    return q.sub_(nh) * d
