"""BF16: one bfloat16 per element (2 bytes): its 16 bits are the top half of a float32 (exact)."""

import torch


def decode(blocks: torch.Tensor) -> torch.Tensor:
    if blocks.storage_offset() % 2 or not blocks.is_contiguous():
        blocks = blocks.clone()  # view(dtype) needs whole, aligned elements
    return blocks.view(torch.bfloat16).to(torch.float32)
