"""F32: one little-endian float32 per element (4 bytes)."""

import torch

from ._fields import u8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    b = u8(blocks, 0, 4)
    return (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)).view(torch.float32).unsqueeze(1)
