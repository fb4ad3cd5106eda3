"""Pure-torch reference dequantizer: the semantics every backend of gguf-dequant must match bit for bit.

Semantics: decode each block in float32 exactly as ggml's C reference does (one rounding per operation,
left to right), then round once, to nearest even, to the output dtype. Works on any device without a
round trip through the CPU, in chunks so that scratch memory stays bounded.

Each type has one module here, named after the type (``q4_0.py``), exposing
``decode(blocks: uint8 (n, block_bytes)) -> float32 (n, block_elems)``.

``linear`` computes on packed weights with the same semantics as the compiled kernels (x exactly to float32,
products and sums in float32, bias added in float32, one rounding), dequantizing a bounded number of weight
rows at a time; its summation order is torch's float32 matmul, so it meets the error bound of the README
("Compute on packed weights") rather than the kernels' bits.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ..types import QuantType, resolve

__all__ = ["dequantize", "linear", "decoder", "output_shape", "check_blob", "check_linear", "OUTPUT_DTYPES"]

OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# About 512K output elements per chunk: large enough to amortise per-op overhead, small enough for the
# int32/float32 intermediates to stay in cache (measured best on a 2-core VM, oracles.md section 7.3).
CHUNK_ELEMS = 1 << 19
# Weight elements dequantized at a time by ``linear`` (16 MiB of float32).
LINEAR_CHUNK_ELEMS = 1 << 22


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


def check_linear(x, blocks, qtype, bias=None) -> tuple[torch.Tensor, QuantType, int]:
    """Validate ``linear``'s arguments (the checks every backend makes); return blocks, the type and K."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in OUTPUT_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    blocks, t = check_blob(blocks, qtype, torch.float32)
    if blocks.dim() != 2:
        raise ValueError(f"blocks must be (out_features, bytes_per_row), got shape {tuple(blocks.shape)}")
    k = output_shape(tuple(blocks.shape), t)[-1]
    if x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(f"x has shape {tuple(x.shape)} but the {t.name} rows of blocks hold {k} elements (in_features)")
    if x.device != blocks.device:
        raise ValueError(f"x is on {x.device} but blocks are on {blocks.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype not in (torch.float32, x.dtype):
            raise TypeError(f"bias must be a float32 tensor or have x's dtype ({x.dtype})")
        if tuple(bias.shape) != (blocks.shape[0],):
            raise ValueError(f"bias must be ({blocks.shape[0]},) for {blocks.shape[0]} out_features, "
                             f"got shape {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but x is on {x.device}")
    return blocks, t, k


def linear(x: torch.Tensor, blocks, qtype, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` for the packed weight ``blocks`` (uint8 ``(out_features, bytes_per_row)``).

    x: ``(..., in_features)`` float32/float16/bfloat16; bias: optional ``(out_features,)`` in float32 or x's
    dtype. Returns ``(..., out_features)`` in x's dtype. Scratch memory: one chunk of dequantized rows.
    """
    blocks, t, k = check_linear(x, blocks, qtype, bias)
    n = blocks.shape[0]
    x32 = x.reshape(-1, k).float()
    y = torch.empty(x32.shape[0], n, dtype=torch.float32, device=x.device)
    step = max(1, LINEAR_CHUNK_ELEMS // max(k, 1))
    for start in range(0, n, step):
        y[:, start:start + step] = x32 @ dequantize(blocks[start:start + step], t).T
    if bias is not None:
        y += bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], n)
