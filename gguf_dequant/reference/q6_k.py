"""Q6_K: 256 elements in 210 bytes: ql[128] @0, qh[64] @128, scales[16] (int8) @192, d (half) @208.
Half h: element 128h + 32k + l has low 4 bits lo(ql[64h + l]), lo(ql[64h + l + 32]), hi(ql[64h + l]),
hi(ql[64h + l + 32]) for k = 0..3 and high 2 bits (qh[32h + l] >> 2k) & 3; q = (low | high << 4) - 32.
y = (d * scales[e / 16]) * q."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    d = f16(blocks, 208)
    dev = blocks.device
    low = (u8(blocks, 0, 128).view(-1, 2, 1, 64)
           >> torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 1, 2, 1)).bitwise_and_(0xF)
    # High 2 bits moved to bits 4-5: ((byte << 4) >> 2k) & 48.
    high = ((u8(blocks, 128, 192) << 4).view(-1, 2, 1, 32)
            >> torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=dev).view(1, 1, 4, 1)).bitwise_and_(48)
    q = low.view(-1, 2, 4, 32).bitwise_or_(high).sub_(32).view(-1, 16, 16)
    # Signed scales: a same-size int8 view of the bytes; d * int8 promotes to float32 (d * float(sc)).
    dl = (d * blocks[:, 192:208].view(torch.int8)).unsqueeze(-1)
    return (q * dl).view(-1, 256)
