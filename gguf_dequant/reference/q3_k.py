"""Q3_K: 256 elements in 110 bytes: hmask[32] @0, qs[64] @32, scales[12] @96 (16 six-bit scales), d (half)
@108. Low 2 bits as Q2_K; element e's high bit is bit e / 32 of hmask[e % 32] (q = low2 - 4 when it is 0).
Scale i: low 4 bits lo(scales[i]) (i < 8) or hi(scales[i - 8]), high 2 bits (scales[8 + i % 4] >> 2(i / 4)) & 3.
y = (d * (sc - 32)) * q."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    hm = u8(blocks, 0, 32)
    qs = u8(blocks, 32, 96)
    sc = u8(blocks, 96, 108)
    d = f16(blocks, 108)
    dev = blocks.device
    shifts2 = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=dev)
    lo = ((sc[:, 0:8].unsqueeze(1) >> torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 2, 1))
          & 0xF).view(-1, 16)
    hi = ((sc[:, 8:12].unsqueeze(1) >> shifts2.view(1, 4, 1)) & 3).view(-1, 16)
    dl = (d * ((lo | (hi << 4)) - 32).to(torch.float32)).unsqueeze(-1)
    low2 = (qs.view(-1, 2, 1, 32) >> shifts2.view(1, 1, 4, 1)) & 3
    # Bit k of hmask[l] (element 32k + l) moved to bit 2: ((byte << 2) >> k) & 4.
    high = ((hm << 2).view(-1, 1, 32) >> torch.arange(8, dtype=torch.int32, device=dev).view(1, 8, 1)) & 4
    q = ((low2.view(-1, 8, 32) | high) - 4).view(-1, 16, 16).to(torch.float32)
    return (dl * q).view(-1, 256)
