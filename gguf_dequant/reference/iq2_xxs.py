"""IQ2_XXS: 256 elements in 66 bytes: d (half) @0, qs[64] @2. Group g (32 elements) reads qs bytes
8g..8g+7 as two little-endian u32 words a, b: byte l of a indexes iq2xxs_grid (8 values) for elements
8l..8l+7; bits 7l..7l+6 of b index ksigns_iq2xs (bit j set -> element 8l + j negated); ls = b >> 28.
db = d * (0.5 + ls) * 0.25; y = db * grid * sign (ggml's order, each step rounded in float32)."""

import torch

from ._fields import cached_per_device, f16, grid, table, u8


@cached_per_device
def ksign_values(device: torch.device) -> torch.Tensor:
    """(128, 8) float32 +-1: row i gives the signs of ksigns_iq2xs[i] (bit j set -> -1 at position j)."""
    return sign_bits(table("ksigns_iq2xs", device, torch.int32))


def sign_bits(byte_values: torch.Tensor) -> torch.Tensor:
    """(k,) int32 sign bytes -> (k, 8) float32 +-1 (bit j set -> -1 at position j)."""
    bits = (byte_values.unsqueeze(-1) >> torch.arange(8, dtype=torch.int32, device=byte_values.device)) & 1
    return (1 - 2 * bits).to(torch.float32)


def rows(tab: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """tab[idx] for an int32 index tensor: shape (*idx.shape, tab.shape[1])."""
    return tab.index_select(0, idx.reshape(-1)).view(*idx.shape, tab.shape[1])


def decode(blocks: torch.Tensor) -> torch.Tensor:
    dev = blocks.device
    d = f16(blocks, 0)                                   # (n, 1)
    q = u8(blocks, 2, 66).view(-1, 8, 8)                 # (n, group, byte)
    b = q[:, :, 4] | (q[:, :, 5] << 8) | (q[:, :, 6] << 16) | (q[:, :, 7] << 24)
    shifts = torch.tensor([0, 7, 14, 21], dtype=torch.int32, device=dev)
    sidx = (b.unsqueeze(-1) >> shifts) & 127            # (n, 8, 4); bits <= 27, sign of int32 irrelevant
    ls = (q[:, :, 7] >> 4).to(torch.float32)            # (n, 8)
    db = (d * (0.5 + ls) * 0.25).view(-1, 8, 1, 1)
    g = rows(grid("iq2xxs", dev), q[:, :, 0:4])          # (n, 8, 4, 8)
    s = rows(ksign_values(dev), sidx)                    # (n, 8, 4, 8)
    return g.mul_(db).mul_(s).view(-1, 256)             # in place: (g * db) * s == (db * g) * s
