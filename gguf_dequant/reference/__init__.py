"""Pure-torch reference dequantizer: the semantics every backend of gguf-dequant must match bit for bit.

Semantics: decode each block in float32 exactly as ggml's C reference does (one rounding per operation,
left to right), then round once, to nearest even, to the output dtype. Works on any device without a
round trip through the CPU, in chunks so that scratch memory stays bounded.

Each type has one module here, named after the type (``q4_0.py``), exposing
``decode(blocks: uint8 (n, block_bytes)) -> float32 (n, block_elems)``.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ..types import QuantType, resolve

__all__ = ["dequantize", "decoder", "output_shape", "check_blob", "OUTPUT_DTYPES"]

OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# About 512K output elements per chunk: large enough to amortise per-op overhead, small enough for the
# int32/float32 intermediates to stay in cache (measured best on a 2-core VM, oracles.md section 7.3).
CHUNK_ELEMS = 1 << 19


def decoder(qtype):
    """The ``decode`` function of a type's reference module."""
    t = resolve(qtype)
    return importlib.import_module(f"{__name__}.{t.name.lower()}").decode


def output_shape(blob_shape, qtype) -> tuple[int, ...]:
    """Shape of the dequantized result: the last (byte) dimension becomes elements."""
    t = resolve(qtype)
    if len(blob_shape) == 0:
        raise ValueError("blob must have at least one dimension (the bytes of the blocks)")
    nbytes = blob_shape[-1]
    if nbytes % t.block_bytes:
        raise ValueError(
            f"{t.name} blocks are {t.block_bytes} bytes each, but the last dimension of the blob has "
            f"{nbytes} bytes, which is not a multiple of {t.block_bytes}")
    return (*blob_shape[:-1], nbytes // t.block_bytes * t.block_elems)


def check_blob(blob, qtype, dtype) -> tuple[torch.Tensor, QuantType]:
    """Validate the arguments shared by every backend; return the blob as a tensor and the QuantType."""
    t = resolve(qtype)
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8:
            raise TypeError(f"blob must hold uint8 bytes, got a numpy array of {blob.dtype}")
        blob = torch.from_numpy(np.require(blob, requirements="W") if not blob.flags.writeable else blob)
    if not isinstance(blob, torch.Tensor):
        raise TypeError(f"blob must be a uint8 torch.Tensor, got {type(blob).__name__}")
    if blob.dtype != torch.uint8:
        raise TypeError(f"blob must be a uint8 tensor of raw GGUF bytes, got dtype {blob.dtype}")
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"unsupported output dtype {dtype}; use torch.float32, torch.float16 or torch.bfloat16")
    output_shape(tuple(blob.shape), t)
    return blob, t


def dequantize(blob, qtype, dtype: torch.dtype = torch.float32, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Dequantize raw GGUF blocks.

    blob: uint8 tensor, 1-D raw bytes or N-D with the last dimension in bytes (GGUFReader's layout).
    qtype: int id, case-insensitive name or ``gguf.GGMLQuantizationType``.
    dtype: torch.float32, torch.float16 or torch.bfloat16.
    out: optional preallocated result (shape and dtype as returned, same device, contiguous).
    Returns a tensor on ``blob``'s device with the last dimension in elements.
    """
    blob, t = check_blob(blob, qtype, dtype)
    shape = output_shape(tuple(blob.shape), t)
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=blob.device)
    else:
        _check_out(out, shape, dtype, blob.device)
    n_blocks = out.numel() // t.block_elems
    if n_blocks == 0:
        return out
    blocks = blob.reshape(n_blocks, t.block_bytes)
    flat = out.view(n_blocks, t.block_elems)
    decode = decoder(t)
    step = max(1, CHUNK_ELEMS // t.block_elems)
    for start in range(0, n_blocks, step):
        stop = min(start + step, n_blocks)
        flat[start:stop].copy_(decode(blocks[start:stop]))
    return out


def _check_out(out: torch.Tensor, shape, dtype, device) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype} but dtype={dtype} was requested")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.device != device:
        raise ValueError(f"out is on {out.device} but blob is on {device}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
