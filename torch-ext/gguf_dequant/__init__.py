"""gguf-dequant: exact dequantization of GGUF/GGML quantized blocks to float32, float16 or bfloat16.

Results equal llama.cpp's CPU reference bit for bit: every value is decoded in float32 and rounded once
to the output dtype. Types are given as a GGML type id, a name ("q4_k") or a gguf.GGMLQuantizationType.
"""

import torch

from ._ops import add_op_namespace_prefix, ops
from ._types import TYPES

GGML_TYPES = {name: tid for tid, name, _, _ in TYPES}  # "Q4_K" -> 12
TYPE_NAMES = {tid: name for tid, name, _, _ in TYPES}  # 12 -> "Q4_K"
OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCKS = {tid: (elems, nbytes) for tid, _, elems, nbytes in TYPES}


def _ggml_name(tid: int) -> str:
    """ggml's own spelling: lower case with an upper-case K suffix (q4_K)."""
    name = TYPE_NAMES[tid].lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


__all__ = [
    "dequantize", "get_rows", "supported_types", "supported_devices", "type_id",
    "GGML_TYPES", "TYPE_NAMES", "OUTPUT_DTYPES",
    # transformers' earlier Metal fast path: torch_dequantize_<ggml name>(flat_uint8_in, flat_out)
    *(f"torch_dequantize_{_ggml_name(tid)}" for tid in TYPE_NAMES),
]


def type_id(qtype) -> int:
    """The GGML type id of an int id, a case-insensitive name or a gguf.GGMLQuantizationType."""
    if isinstance(qtype, str):
        key = qtype.strip().upper()
        if key not in GGML_TYPES:
            raise ValueError(f"unknown or unsupported GGML type name {qtype!r}; supported: {sorted(GGML_TYPES)}")
        return GGML_TYPES[key]
    value = getattr(qtype, "value", qtype)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"GGML type must be an int id, a name or a GGMLQuantizationType, got {type(qtype).__name__}")
    if value not in TYPE_NAMES:
        raise ValueError(f"GGML type id {value} is not a dequantizable storage type "
                         "(unknown, removed, integer or intermediate-only)")
    return value


def supported_types() -> frozenset:
    """Type ids the loaded build can dequantize."""
    return frozenset(ops.supported_types())


def supported_devices() -> tuple:
    """Device types ("cpu", "mps") this build has kernels for."""
    name = add_op_namespace_prefix("dequantize")
    return tuple(dev for dev, key in (("cpu", "CPU"), ("mps", "MPS"))
                 if torch._C._dispatch_has_kernel_for_dispatch_key(name, key))


def _check(blob: torch.Tensor, dtype) -> None:
    if not isinstance(blob, torch.Tensor):
        raise TypeError(f"blob must be a uint8 torch.Tensor, got {type(blob).__name__}")
    if dtype not in OUTPUT_DTYPES:
        raise TypeError(f"unsupported output dtype {dtype}; use torch.float32, torch.float16 or torch.bfloat16")
    if blob.device.type != "meta" and blob.device.type not in supported_devices():
        raise ValueError(f"this build of gguf-dequant runs on {', '.join(supported_devices())}; "
                         f"the blob is on {blob.device}")


def dequantize(blob, qtype, *shape_and_dtype, dtype=None, out=None):
    """Dequantize raw GGUF blocks.

    ``dequantize(blob, qtype, dtype=torch.float32, *, out=None)``: blob is a uint8 tensor, 1-D raw bytes or
    N-D with the last dimension in bytes (GGUFReader's layout); the result has the same leading dimensions
    and the last one in elements. With ``out`` the result is written there (e.g. straight into a model
    parameter: contiguous, the right shape and dtype) and ``out`` is returned.

    ``dequantize(blocks, ggml_type, rows, cols, dtype)``: the call shape of kernels-community's
    ggml-quantization kernel (used by transformers); returns a ``(rows, cols)`` tensor.
    """
    rows = cols = None
    if len(shape_and_dtype) == 1:
        dtype = shape_and_dtype[0] if dtype is None else dtype
    elif len(shape_and_dtype) in (2, 3):
        rows, cols = shape_and_dtype[:2]
        if len(shape_and_dtype) == 3:
            dtype = shape_and_dtype[2]
    elif shape_and_dtype:
        raise TypeError("dequantize takes (blob, qtype[, dtype]) or (blocks, ggml_type, rows, cols, dtype)")
    dtype = torch.float32 if dtype is None else dtype
    tid = type_id(qtype)
    _check(blob, dtype)
    if out is None:
        result = ops.dequantize(blob, tid, dtype)
    else:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
        if out.dtype != dtype:
            raise TypeError(f"out has dtype {out.dtype} but dtype={dtype} was requested")
        ops.dequantize_out(blob, tid, out)
        result = out
    if rows is None:
        return result
    if result.numel() != rows * cols:
        raise ValueError(f"rows * cols = {rows} * {cols} does not match the {result.numel()} elements "
                         f"of the {TYPE_NAMES[tid]} blocks")
    return result.reshape(rows, cols)


def get_rows(blocks, indices, qtype, cols, dtype=torch.float32):
    """Decode only the rows ``indices`` of a quantized matrix (an embedding lookup).

    blocks: uint8 ``(rows, bytes_per_row)``; indices: integer tensor of any shape; returns
    ``(*indices.shape, cols)``.
    """
    tid = type_id(qtype)
    _check(blocks, dtype)
    elems, nbytes = _BLOCKS[tid]
    if blocks.dim() != 2 or cols % elems or blocks.shape[1] != cols // elems * nbytes:
        raise ValueError(f"blocks must be (rows, {cols // elems * nbytes if cols % elems == 0 else '?'}) "
                         f"uint8 for {cols} {TYPE_NAMES[tid]} columns; got {tuple(blocks.shape)}")
    if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.is_complex():
        raise TypeError("indices must be an integer tensor")
    picked = blocks.index_select(0, indices.reshape(-1).to(device=blocks.device, dtype=torch.long))
    return ops.dequantize(picked, tid, dtype).reshape(*indices.shape, cols)


def _legacy_function(tid: int):
    def torch_dequantize(flat_in: torch.Tensor, flat_out: torch.Tensor) -> torch.Tensor:
        """Dequantize the flat uint8 blocks ``flat_in`` into the flat tensor ``flat_out`` (any float dtype)."""
        _check(flat_in, flat_out.dtype)
        ops.dequantize_out(flat_in.reshape(-1), tid, flat_out.view(-1))
        return flat_out

    torch_dequantize.__name__ = torch_dequantize.__qualname__ = f"torch_dequantize_{_ggml_name(tid)}"
    return torch_dequantize


for _tid in TYPE_NAMES:
    globals()[f"torch_dequantize_{_ggml_name(_tid)}"] = _legacy_function(_tid)
del _tid


@torch.library.register_fake(add_op_namespace_prefix("dequantize"))
def _dequantize_fake(blob, qtype, dtype):
    elems, nbytes = _BLOCKS[qtype]
    torch._check(blob.shape[-1] % nbytes == 0)
    return blob.new_empty((*blob.shape[:-1], blob.shape[-1] // nbytes * elems), dtype=dtype)


@torch.library.register_fake(add_op_namespace_prefix("dequantize_out"))
def _dequantize_out_fake(blob, qtype, out):
    return None
