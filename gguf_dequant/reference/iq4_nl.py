"""IQ4_NL: 32 elements in 18 bytes: d (half) @0, qs[16] @2. Element j < 16 uses lo(qs[j]), element j + 16
hi(qs[j]); y = d * kvalues_iq4nl[nibble].

The nibble split is folded into the lookup: ``byte_kvalues`` maps byte b to kvalues_iq4nl[lo(b)] at
index b and to kvalues_iq4nl[hi(b)] at index 256 + b, so one gather yields the values in element order."""

import torch

from ._fields import cached_per_device, f16, table, u8


@cached_per_device
def byte_kvalues(device: torch.device) -> torch.Tensor:
    kv = table("kvalues_iq4nl", device)
    return torch.cat([kv.repeat(16), kv.repeat_interleave(16)])   # (512,) float32


@cached_per_device
def halves(device: torch.device) -> torch.Tensor:
    """[0, 256]: offset of the low-nibble and high-nibble halves of ``byte_kvalues``."""
    return torch.tensor([0, 256], dtype=torch.int32, device=device)


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    idx = u8(blocks, 2, 18).view(-1, 1, 16) + halves(dev).view(1, 2, 1)
    kv = byte_kvalues(dev).index_select(0, idx.view(-1)).view(-1, 32)
    return kv.mul_(d)                                    # in place: kvalue * d == d * kvalue
