"""Q4_K: 256 elements in 144 bytes: d (half) @0, dmin (half) @2, scales[12] @4 (8 six-bit scales and mins),
qs[128] @16. Sub-block j (32 elements) reads qs[32(j / 2) ...], low nibbles if j is even, high if odd.
y = (d * sc) * q - (dmin * m)."""

import torch

from ._fields import f16, u8


def scale_min_k4(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's get_scale_min_k4 for j = 0..7 on (n, 12) int32 scale bytes: (sc, m), each (n, 8) int32."""
    lo, mn, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([lo & 63, (md & 0xF) | ((lo >> 6) << 4)], dim=1)
    m = torch.cat([mn & 63, (md >> 4) | ((mn >> 6) << 4)], dim=1)
    return sc, m


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dd = f16(blocks, 0, 2)
    sc, m = scale_min_k4(u8(blocks, 4, 16))
    nib = torch.tensor([0, 4], dtype=torch.int32, device=blocks.device).view(1, 1, 2, 1)
    q = (u8(blocks, 16, 144).view(-1, 4, 1, 32) >> nib).bitwise_and_(0xF).view(-1, 8, 32)
    dl = (dd[:, 0:1] * sc).unsqueeze(-1)
    ml = (dd[:, 1:2] * m).unsqueeze(-1)
    return (q * dl).sub_(ml).view(-1, 256)
