"""IQ1_M: 256 elements in 56 bytes: qs[32] @0, qh[16] @32, scales[8] @48 read as four u16 words sc[0..3].
No separate d: its half bits are the top nibbles of sc[0], sc[1], sc[2], sc[3] (bits 0-3, 4-7, 8-11, 12-15).
Group g: dl1 = d * (2 * ((sc[g/2] >> 6(g%2)) & 7) + 1) for the first 16 elements, dl2 with shift
6(g%2) + 3 for the last 16. 8-element sub-group l (0..3) uses qh byte b = qh[2g + l/2]: index
qs[4g + l] | (bits 0-2 of b for even l, bits 4-6 for odd l) << 8 into iq1s_grid; bit 3 (even l) / bit 7
(odd l) of b set -> delta = -IQ1S_DELTA, else +IQ1S_DELTA. y = dl * (grid + delta).

As in IQ1_S, grid + delta comes from a precomputed (4096, 8) table: each qh nibble, shifted left by 8,
is exactly (3 index bits) | (delta bit -> bit 11)."""

import torch

from ._fields import half_bits_to_f32, u8, u16
from .iq1_s import grid_plus_delta
from .iq2_xxs import rows


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    qs = u8(blocks, 0, 32).view(-1, 16, 2)
    qh = u8(blocks, 32, 48)                              # (n, 16)
    sc = u16(blocks, 48, 4)                              # (n, 4)
    dbits = ((sc[:, 0:1] >> 12) | ((sc[:, 1:2] >> 8) & 0x00F0) | ((sc[:, 2:3] >> 4) & 0x0F00)
             | (sc[:, 3:4] & 0xF000))
    d = half_bits_to_f32(dbits)                          # (n, 1)
    s = (sc.unsqueeze(-1) >> torch.tensor([0, 3, 6, 9], dtype=torch.int32, device=dev)) & 7
    dl = (d * (2 * s.view(-1, 16) + 1).to(torch.float32)).view(-1, 16, 1, 1)
    nib = (qh.unsqueeze(-1) >> torch.tensor([0, 4], dtype=torch.int32, device=dev)) & 0xF
    idx = qs | (nib << 8)                                # (n, 16, 2), bit 11 = delta sign
    return rows(grid_plus_delta(dev), idx).mul_(dl).view(-1, 256)   # (grid + delta) * dl, in place
