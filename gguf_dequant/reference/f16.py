"""F16: one IEEE binary16 per element (2 bytes); widening to float32 is exact."""

import torch


def decode(blocks: torch.Tensor) -> torch.Tensor:
    if blocks.storage_offset() % 2 or not blocks.is_contiguous():
        blocks = blocks.clone()  # view(dtype) needs whole, aligned elements
    return blocks.view(torch.float16).to(torch.float32)
