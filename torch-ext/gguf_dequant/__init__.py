"""gguf-dequant: exact dequantization of GGUF/GGML quantized blocks to float32, float16 or bfloat16, and
compute on the packed blocks (``linear``, ``mul_mat_vec``, ``mul_mat_id``, the modules in ``layers``).

Results equal llama.cpp's CPU reference bit for bit: every value is decoded in float32 and rounded once
to the output dtype. Matrix products take x exactly to float32, multiply and sum in float32 in one fixed
order per output (batch-invariant, deterministic) and round once. Types are given as a GGML type id, a
name ("q4_k") or a gguf.GGMLQuantizationType.
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
    "linear", "mul_mat_vec", "mul_mat_id", "layers",
    "GGML_TYPES", "TYPE_NAMES", "OUTPUT_DTYPES", "GEMV_TYPES", "MAX_GEMV_ROWS",
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


_DEVICES = tuple(dev for dev, key in (("cpu", "CPU"), ("mps", "MPS"))
                 if torch._C._dispatch_has_kernel_for_dispatch_key(add_op_namespace_prefix("dequantize"), key))


def supported_devices() -> tuple:
    """Device types ("cpu", "mps") this build has kernels for."""
    return _DEVICES


def _check_tensor(what: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "meta" and t.device.type not in supported_devices():
        raise ValueError(f"this build of gguf-dequant runs on {', '.join(supported_devices())}; "
                         f"the {what} is on {t.device}")


def _check(blob: torch.Tensor, dtype) -> None:
    _check_tensor("blob", blob)
    if dtype not in OUTPUT_DTYPES:
        raise TypeError(f"unsupported output dtype {dtype}; use torch.float32, torch.float16 or torch.bfloat16")


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


# Compute on packed weights. Every op takes x exactly to float32, multiplies and adds in float32 in one fixed
# order per output (README, "Compute on packed weights") and rounds once; row m of a result does not depend
# on the other rows. Bad arguments raise TypeError / ValueError / IndexError naming the problem.

GEMV_TYPES = frozenset(TYPE_NAMES)  # the ids mul_mat_vec / mul_mat_id serve: every storage type
MAX_GEMV_ROWS = 8  # rows up to which mul_mat_vec is fastest (it is correct, and cheap per row, for any number)


def linear(x, blocks, qtype, bias=None):
    """``x @ W.T + bias`` with W the packed GGUF weight.

    x: ``(..., in_features)`` float32/float16/bfloat16; blocks: uint8 ``(out_features, bytes_per_row)``
    (GGUFReader's layout); bias: optional ``(out_features,)`` in float32 or x's dtype. Returns
    ``(..., out_features)`` in x's dtype.
    """
    _check_tensor("x", x)
    _check_tensor("blocks", blocks)
    if bias is not None:
        _check_tensor("bias", bias)
    return ops.linear(x, blocks, type_id(qtype), bias)


def mul_mat_vec(blocks, x, ggml_type, out_features):
    """ggml-quantization's call shape: ``x (M, K) @ W.T`` as float32 ``(M, out_features)``, any M."""
    _check_tensor("x", x)
    _check_tensor("blocks", blocks)
    return ops.mul_mat_vec(blocks, x, type_id(ggml_type), out_features)


def mul_mat_id(blocks, x, ids, ggml_type, out_features):
    """Mixture of experts: slot ``(t, u)`` of the float32 ``(T, U, out_features)`` result is
    ``W[ids[t, u]] @ x[t]`` for x ``(T, K)``, or ``W[ids[t, u]] @ x[t, u]`` for x ``(T, U, K)`` (or
    ``(T, 1, K)``). blocks: uint8 ``(experts, out_features, bytes_per_row)``; ids: int32/int64 ``(T, U)``,
    each in ``[0, experts)`` (checked on the CPU).
    """
    _check_tensor("x", x)
    _check_tensor("blocks", blocks)
    _check_tensor("ids", ids)
    return ops.mul_mat_id(blocks, x, ids, type_id(ggml_type), out_features)


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


# The fakes check what the compiled binding checks that shapes and dtypes can tell (torch.compile traces
# through them), and give the result's shape and dtype.
def _fake_packed(op, blocks, qtype, dims, x):
    torch._check_value(qtype in _BLOCKS, lambda: f"gguf_dequant.{op}: GGML type id {qtype} is not a storage type")
    elems, nbytes = _BLOCKS[qtype]
    torch._check_type(blocks.dtype == torch.uint8, lambda: f"gguf_dequant.{op}: blocks must be uint8")
    torch._check_value(blocks.dim() == dims, lambda: f"gguf_dequant.{op}: blocks must have {dims} dimensions")
    torch._check_value(blocks.is_contiguous(), lambda: f"gguf_dequant.{op}: blocks must be contiguous")
    torch._check_value(blocks.shape[-1] % nbytes == 0,
                       lambda: f"gguf_dequant.{op}: rows of blocks are not whole {TYPE_NAMES[qtype]} blocks")
    torch._check_type(x.dtype in OUTPUT_DTYPES, lambda: f"gguf_dequant.{op}: x must be float32, float16 or bfloat16")
    torch._check_value(x.dim() >= 1 and x.shape[-1] == blocks.shape[-1] // nbytes * elems,
                       lambda: f"gguf_dequant.{op}: x's last dimension does not match the rows of blocks")
    torch._check_value(x.device == blocks.device, lambda: f"gguf_dequant.{op}: x and blocks are on different devices")


@torch.library.register_fake(add_op_namespace_prefix("linear"))
def _linear_fake(x, blocks, qtype, bias):
    _fake_packed("linear", blocks, qtype, 2, x)
    if bias is not None:
        torch._check_type(bias.dtype in (torch.float32, x.dtype), lambda: "gguf_dequant.linear: bias dtype")
        torch._check_value(bias.dim() == 1 and bias.shape[0] == blocks.shape[0],
                           lambda: "gguf_dequant.linear: bias must be (out_features,)")
        torch._check_value(bias.device == x.device, lambda: "gguf_dequant.linear: bias is on another device")
    return x.new_empty((*x.shape[:-1], blocks.shape[0]))


@torch.library.register_fake(add_op_namespace_prefix("mul_mat_vec"))
def _mul_mat_vec_fake(blocks, x, ggml_type, out_features):
    _fake_packed("mul_mat_vec", blocks, ggml_type, 2, x)
    torch._check_value(x.dim() == 2, lambda: "gguf_dequant.mul_mat_vec: x must be (rows, in_features)")
    torch._check_value(blocks.shape[0] == out_features, lambda: "gguf_dequant.mul_mat_vec: out_features")
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.register_fake(add_op_namespace_prefix("mul_mat_id"))
def _mul_mat_id_fake(blocks, x, ids, ggml_type, out_features):
    _fake_packed("mul_mat_id", blocks, ggml_type, 3, x)
    torch._check_value(blocks.shape[1] == out_features, lambda: "gguf_dequant.mul_mat_id: out_features")
    torch._check_type(ids.dtype in (torch.int32, torch.int64), lambda: "gguf_dequant.mul_mat_id: ids dtype")
    torch._check_value(ids.dim() == 2 and x.dim() in (2, 3) and x.shape[0] == ids.shape[0],
                       lambda: "gguf_dequant.mul_mat_id: x must be (T, K) or (T, U, K) for ids (T, U)")
    if x.dim() == 3:
        torch._check_value(x.shape[1] == 1 or x.shape[1] == ids.shape[1],
                           lambda: "gguf_dequant.mul_mat_id: x's second dimension must be 1 or U")
    torch._check_value(ids.device == x.device, lambda: "gguf_dequant.mul_mat_id: ids are on another device")
    return x.new_empty((ids.shape[0], ids.shape[1], out_features), dtype=torch.float32)


from . import layers  # noqa: E402 - the modules call the functions above
