"""IQ4_XS: 256 elements in 136 bytes: d (half) @0, scales_h (u16) @2, scales_l[4] @4, qs[128] @8.
Group g: ls = ((scales_l[g/2] >> 4(g%2)) & 0xF) | ((scales_h >> 2g) & 3) << 4; dl = d * (ls - 32);
bytes qs[16g .. 16g+15]: element j from the low nibble, j + 16 from the high nibble;
y = dl * kvalues_iq4nl[nibble]. (Values are gathered per byte as in IQ4_NL.)"""

import torch

from ._fields import f16, u8, u16
from .iq4_nl import byte_kvalues, halves


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    sh = u16(blocks, 2)                                  # (n, 1)
    sl = u8(blocks, 4, 8)
    lo = torch.stack([sl & 0xF, sl >> 4], dim=-1).view(-1, 8)
    hi = (sh >> torch.arange(0, 16, 2, dtype=torch.int32, device=dev)) & 3
    dl = (d * ((lo | (hi << 4)) - 32).to(torch.float32)).view(-1, 8, 1)
    idx = u8(blocks, 8, 136).view(-1, 8, 1, 16) + halves(dev).view(1, 1, 2, 1)
    kv = byte_kvalues(dev).index_select(0, idx.view(-1)).view(-1, 8, 32)
    return kv.mul_(dl).view(-1, 256)                     # in place: kvalue * dl == dl * kvalue
