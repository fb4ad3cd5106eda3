"""Q5_K: 256 elements in 176 bytes: d (half) @0, dmin (half) @2, scales[12] @4 (as Q4_K), qh[32] @16,
qs[128] @48. As Q4_K, plus a 5th bit: element l of sub-block j uses bit j of qh[l].
y = (d * sc) * q - (dmin * m)."""

import torch

from ._fields import f16, u8
from .q4_k import scale_min_k4


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dd = f16(blocks, 0, 2)
    sc, m = scale_min_k4(u8(blocks, 4, 16))
    qh = u8(blocks, 16, 48)
    qs = u8(blocks, 48, 176)
    dev = blocks.device
    nib = torch.tensor([0, 4], dtype=torch.int32, device=dev).view(1, 1, 2, 1)
    ql = ((qs.view(-1, 4, 1, 32) >> nib) & 0xF).view(-1, 8, 32)
    # Bit j of qh[l] moved to bit 4: ((byte << 4) >> j) & 16.
    high = ((qh << 4).view(-1, 1, 32) >> torch.arange(8, dtype=torch.int32, device=dev).view(1, 8, 1)) & 16
    q = (ql | high).to(torch.float32)
    dl = (dd[:, 0:1] * sc.to(torch.float32)).unsqueeze(-1)
    ml = (dd[:, 1:2] * m.to(torch.float32)).unsqueeze(-1)
    return (dl * q - ml).view(-1, 256)
