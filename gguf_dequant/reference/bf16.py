"""BF16: one bfloat16 per element (2 bytes): its 16 bits are the top half of a float32."""

import torch

from ._fields import u16


def decode(blocks: torch.Tensor) -> torch.Tensor:
    return (u16(blocks, 0) << 16).view(torch.float32)
