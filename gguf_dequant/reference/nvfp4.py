"""NVFP4: 64 elements in 36 bytes: d[4] (UE4M3, one per 16-element sub-block) @0, qs[32] @4. Sub-block s
reads qs[8s .. 8s + 7]: low nibbles -> elements 16s + 0..7, high nibbles -> 16s + 8..15;
y = kvalues_fp4[nibble] * u(d[s]) with u = ggml_ue4m3_to_fp32: 0x00 and 0x7F -> 0, exponent bits 3..6,
mantissa bits 0..2, bias 7, exponent 0 -> man * 2^-9, else (1 + man / 8) * 2^(exp - 7); then * 0.5. Bit 7
is ignored (so 0xFF is 240, 0x80 is 0)."""

import functools

import numpy as np
import torch

from ._fields import table, u8


def ue4m3_values() -> np.ndarray:
    """ggml_ue4m3_to_fp32 for bytes 0..255 as float32 (every value is exact in float32)."""
    out = np.zeros(256, dtype=np.float32)
    for x in range(256):
        if x in (0, 0x7F):
            continue
        exp, man = (x >> 3) & 0xF, x & 7
        raw = man * 2.0 ** -9 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
        out[x] = raw * 0.5
    return out


@functools.cache
def _scales(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(ue4m3_values()).to(device)


def decode(blocks: torch.Tensor) -> torch.Tensor:
    scales = _scales(blocks.device)
    kv = table("kvalues_fp4", blocks.device)
    d = scales.index_select(0, u8(blocks, 0, 4).view(-1)).view(-1, 4, 1)
    qs = u8(blocks, 4, 36)
    shifts = torch.tensor([0, 4], dtype=torch.int32, device=blocks.device).view(1, 1, 2, 1)
    q = ((qs.view(-1, 4, 1, 8) >> shifts) & 0xF).view(-1)
    return (kv.index_select(0, q).view(-1, 4, 16) * d).view(-1, 64)
