"""F32: one little-endian float32 per element (4 bytes)."""

import torch


def decode(blocks: torch.Tensor) -> torch.Tensor:
    if blocks.storage_offset() % 4 or not blocks.is_contiguous():
        blocks = blocks.clone()  # view(dtype) needs whole, aligned elements
    return blocks.view(torch.float32)
