"""IQ1_S: 256 elements in 50 bytes: d (half) @0, qs[32] @2, qh[8] (u16) @34. Group g (32 elements),
h = qh[g]: sub-group l (8 elements) indexes iq1s_grid (values -1/0/1) with qs[4g + l] | ((h >> 3l) & 7) << 8;
dl = d * (2 * ((h >> 12) & 7) + 1); delta = -IQ1S_DELTA if bit 15 of h is set, else +IQ1S_DELTA;
y = dl * (grid + delta).

grid + delta is evaluated once per table row (the same float32 addition ggml performs per element):
rows 0..2047 hold grid + delta, rows 2048..4095 grid - delta, so bit 11 of the index selects the sign."""

import torch

from .. import tables
from ._fields import cached_per_device, f16, grid, u8, u16
from .iq2_xxs import rows


@cached_per_device
def grid_plus_delta(device: torch.device) -> torch.Tensor:
    g = grid("iq1s", device)
    delta = torch.tensor(tables.IQ1S_DELTA, dtype=torch.float32, device=device)
    return torch.cat([g + delta, g + (-delta)], dim=0)   # (4096, 8)


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    qs = u8(blocks, 2, 34).view(-1, 8, 4)
    h = u16(blocks, 34, 8)                               # (n, 8)
    shifts = torch.tensor([0, 3, 6, 9], dtype=torch.int32, device=dev)
    idx = qs | (((h.unsqueeze(-1) >> shifts) & 7) << 8) | ((h >> 15) << 11).unsqueeze(-1)
    dl = (d * (2 * ((h >> 12) & 7) + 1).to(torch.float32)).view(-1, 8, 1, 1)
    return rows(grid_plus_delta(dev), idx).mul_(dl).view(-1, 256)   # (grid + delta) * dl, in place
