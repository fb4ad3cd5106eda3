"""Modules whose weight is the packed GGUF bytes: a uint8 buffer ``weight`` of shape
``(rows, bytes_per_row)`` (GGUFReader's layout), so ``state_dict`` saves and loads the bytes as they are.
"""

import numpy as np
import torch
from torch import nn

from . import TYPE_NAMES, _BLOCKS, get_rows, linear, type_id

__all__ = ["GGUFLinear", "GGUFEmbedding"]


def _bytes_per_row(tid: int, cols: int) -> int:
    elems, nbytes = _BLOCKS[tid]
    if cols % elems:
        raise ValueError(f"{TYPE_NAMES[tid]} rows hold a multiple of {elems} elements, not {cols}")
    return cols // elems * nbytes


def _reader_tensor(tensor):
    """(blocks, type id, rows, cols) of a ``gguf.GGUFReader`` tensor (2-D: GGUF dims (cols, rows))."""
    tid = type_id(tensor.tensor_type)
    dims = [int(d) for d in tensor.shape]
    if len(dims) != 2:
        raise ValueError(f"GGUF tensor {tensor.name!r} has {len(dims)} dimensions {dims}; a layer needs 2")
    cols, rows = dims
    data = np.ascontiguousarray(tensor.data).view(np.uint8).reshape(rows, -1)
    if data.shape[1] != _bytes_per_row(tid, cols):
        raise ValueError(f"GGUF tensor {tensor.name!r}: {data.shape[1]} bytes per row, expected "
                         f"{_bytes_per_row(tid, cols)} for {cols} {TYPE_NAMES[tid]} elements")
    return torch.from_numpy(data.copy()), tid, rows, cols


class GGUFLinear(nn.Module):
    """``y = x @ W.T + bias`` computed on the packed weight (``gguf_dequant.linear``): y in x's dtype."""

    def __init__(self, in_features: int, out_features: int, qtype, bias: bool = False, device=None,
                 dtype=torch.float32):
        super().__init__()
        self.qtype = type_id(qtype)
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, _bytes_per_row(self.qtype, in_features),
                                                   dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def from_blocks(cls, blocks: torch.Tensor, qtype, in_features: int, bias: torch.Tensor | None = None):
        """A layer over existing ``(out_features, bytes_per_row)`` uint8 blocks (shared, not copied)."""
        layer = cls(in_features, blocks.shape[0], qtype, bias=bias is not None, device="meta",
                    dtype=bias.dtype if bias is not None else torch.float32)
        if tuple(blocks.shape) != tuple(layer.weight.shape) or blocks.dtype != torch.uint8:
            raise ValueError(f"blocks must be uint8 {tuple(layer.weight.shape)} for {in_features} "
                             f"{TYPE_NAMES[layer.qtype]} columns, got {blocks.dtype} {tuple(blocks.shape)}")
        layer.weight = blocks
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        return layer

    @classmethod
    def from_gguf_tensor(cls, tensor, bias: torch.Tensor | None = None, device=None):
        """From a ``gguf.GGUFReader`` tensor (e.g. ``blk.0.attn_q.weight``); the bytes are copied."""
        blocks, tid, _, cols = _reader_tensor(tensor)
        if device is not None:
            blocks, bias = blocks.to(device), None if bias is None else bias.to(device)
        return cls.from_blocks(blocks, tid, cols, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.qtype, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"qtype={TYPE_NAMES[self.qtype]}, bias={self.bias is not None}")


class GGUFEmbedding(nn.Module):
    """An embedding table kept packed: ``forward(ids)`` decodes only the rows asked for, in ``dtype``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, qtype, device=None, dtype=torch.float32):
        super().__init__()
        self.qtype = type_id(qtype)
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype
        self.register_buffer("weight", torch.zeros(num_embeddings, _bytes_per_row(self.qtype, embedding_dim),
                                                   dtype=torch.uint8, device=device))

    @classmethod
    def from_gguf_tensor(cls, tensor, device=None, dtype=torch.float32):
        """From a ``gguf.GGUFReader`` tensor (e.g. ``token_embd.weight``); the bytes are copied."""
        blocks, tid, rows, cols = _reader_tensor(tensor)
        layer = cls(rows, cols, tid, device="meta", dtype=dtype)
        layer.weight = blocks if device is None else blocks.to(device)
        return layer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return get_rows(self.weight, ids, self.qtype, self.embedding_dim, self.dtype)

    def extra_repr(self) -> str:
        return (f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
                f"qtype={TYPE_NAMES[self.qtype]}, dtype={self.dtype}")
