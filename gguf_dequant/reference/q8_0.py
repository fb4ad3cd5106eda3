"""Q8_0: 32 elements in 34 bytes: d (half) @0, qs[32] (int8) @2; y = q * d."""

import torch

from ._fields import f16, i8


def decode(blocks: torch.Tensor) -> torch.Tensor:
    return i8(blocks, 2, 34).to(torch.float32) * f16(blocks, 0)
