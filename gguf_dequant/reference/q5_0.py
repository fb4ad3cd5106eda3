"""Q5_0: 32 elements in 22 bytes: d (half) @0, qh (LE u32) @2, qs[16] @6. Element j takes the nibble as
Q4_0 plus bit j of qh as its 5th bit; y = (q - 16) * d."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    d = f16(blocks, 0)
    qh = u8(blocks, 2, 6)
    qs = u8(blocks, 6, 22)
    dev = blocks.device
    nib = torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 2, 1)
    bits = torch.arange(8, dtype=torch.int32, device=dev)
    ql = ((qs.unsqueeze(1) >> nib) & 0xF).reshape(-1, 32)
    # Element 8k + i takes bit i of qh byte k, moved to bit 4: ((byte << 4) >> i) & 16.
    hi = (((qh << 4).unsqueeze(-1) >> bits) & 16).reshape(-1, 32)
    return ((ql | hi) - 16).to(torch.float32) * d
