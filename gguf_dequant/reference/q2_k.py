"""Q2_K: 256 elements in 84 bytes: scales[16] @0 (lo nibble scale, hi nibble min), qs[64] @16, d (half)
@80, dmin (half) @82. Element 128h + 32g + l has q = (qs[32h + l] >> 2g) & 3; sub-block e / 16 uses
dl = d * lo(sc), ml = dmin * hi(sc); y = dl * q - ml."""

import torch

from ._fields import f16, u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    sc = u8(blocks, 0, 16)
    dd = f16(blocks, 80, 2)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32, device=blocks.device).view(1, 1, 4, 1)
    q = (u8(blocks, 16, 80).view(-1, 2, 1, 32) >> shifts).bitwise_and_(3).view(-1, 16, 16)
    dl = (dd[:, 0:1] * (sc & 0xF)).unsqueeze(-1)
    ml = (dd[:, 1:2] * (sc >> 4)).unsqueeze(-1)
    return (q * dl).sub_(ml).view(-1, 256)
