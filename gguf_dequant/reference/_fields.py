"""Reading block fields out of a (n_blocks, block_bytes) uint8 tensor, device-agnostic.

Bytes are widened to int32 before any shift or mask: MPS computes uint8 shifts wrongly (pytorch issues
144190, 147889). Half fields are reassembled from their bytes, so no ``view(dtype)`` on an unaligned or
strided slice is needed.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


def u8(blocks: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Bytes ``start:stop`` of every block as int32, shape (n, stop - start)."""
    return blocks[:, start:stop].to(torch.int32)


def i8(blocks: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Bytes ``start:stop`` read as signed int8, widened to int32."""
    b = u8(blocks, start, stop)
    return b - ((b & 0x80) << 1)


def u16(blocks: torch.Tensor, start: int, count: int = 1) -> torch.Tensor:
    """``count`` little-endian uint16 words from byte ``start`` on, as int32 of shape (n, count)."""
    b = u8(blocks, start, start + 2 * count).reshape(-1, count, 2)
    return b[..., 0] | (b[..., 1] << 8)


def u32(blocks: torch.Tensor, start: int, count: int = 1) -> torch.Tensor:
    """``count`` little-endian uint32 words as int64 (so bit 31 stays a plain bit), shape (n, count)."""
    b = blocks[:, start:start + 4 * count].to(torch.int64).reshape(-1, count, 4)
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)


def half_bits_to_f32(bits: torch.Tensor) -> torch.Tensor:
    """IEEE binary16 bit patterns (int32 0..65535) to float32, exactly (NaN payloads kept)."""
    return bits.to(torch.int16).view(torch.float16).to(torch.float32)


def f16(blocks: torch.Tensor, start: int, count: int = 1) -> torch.Tensor:
    """``count`` half fields from byte ``start`` on, as float32 of shape (n, count)."""
    return half_bits_to_f32(u16(blocks, start, count))


def cached_per_device(build):
    """``build(device)`` (a table on a torch.device) made once per device and kept; the result also takes a device
    name ("cpu", "mps")."""
    cached = functools.cache(build)

    @functools.wraps(build)
    def on(device):
        return cached(torch.device(device))

    return on


@functools.cache
def _table_on(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    from .. import tables
    return torch.from_numpy(np.ascontiguousarray(getattr(tables, name)())).to(device=device, dtype=dtype)


@functools.cache
def _grid_on(name: str, device: torch.device) -> torch.Tensor:
    from .. import tables
    return torch.from_numpy(tables.grid(name).astype(np.float32)).to(device)


def table(name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A lookup table from ``gguf_dequant.tables`` (e.g. "kvalues_iq4nl") on ``device``, cached."""
    return _table_on(name, torch.device(device), dtype)


def grid(name: str, device: torch.device) -> torch.Tensor:
    """An IQ grid ("iq2xxs", ...) as float32 (rows, width) on ``device``, cached."""
    return _grid_on(name, torch.device(device))
