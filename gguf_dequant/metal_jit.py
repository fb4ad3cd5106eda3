"""No-build Metal path: compile metal/*.metal at run time with ``torch.mps.compile_shader``.

Hub Metal builds need macOS 26 and the exact torch minor version they were built for. On any other Mac
with MPS (torch >= 2.7), this module compiles the same kernel sources into one library on first use and
dispatches them on MPS tensors with the launch description of ``gguf_dequant.launch``.

``source()`` is the exact string handed to the Metal compiler: every kernel file with the project's own
headers inlined (compile_shader has no include path). The Linux harness compiles and runs this string too.
Two libraries are built from it on first use: the dequantize kernels alone (``source()``, with
GGUF_NO_MATMUL defined, so dequantizing never waits for the matmul kernels to compile) and everything
(``source(matmul=True)``) for ``linear``, ``mul_mat_vec`` and ``mul_mat_id``.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import torch

from . import launch
from .reference import check_blob, output_shape
from .types import resolve

# Installed from a wheel, the sources ship inside the package (setup.py maps metal/ to gguf_dequant/metal/);
# in a checkout they are metal/ beside the package.
METAL_DIR = Path(__file__).resolve().parent / "metal"
if not METAL_DIR.is_dir():
    METAL_DIR = Path(__file__).resolve().parents[1] / "metal"

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)
_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def kernel_files() -> list[Path]:
    from .tools.gen_metal import kernel_files as names

    return [METAL_DIR / n for n in names()]


@functools.cache
def source(matmul: bool = False) -> str:
    """All kernel files in one translation unit, our headers inlined once each; without ``matmul`` the
    GGUF_MATMUL_KERNELS lines expand to nothing."""
    seen: set[str] = set()

    def expand(path: Path) -> str:
        def include(m: re.Match) -> str:
            name = m.group(1)
            if name in seen:
                return f"// {name}: already included\n"
            seen.add(name)
            return f"// ---- {name} ----\n" + expand(METAL_DIR / name)

        text = path.read_text().replace("#pragma once\n", "")
        return _INCLUDE.sub(include, text)

    parts = [f"// ==== {p.name} ====\n" + expand(p) for p in kernel_files()]
    return ("" if matmul else "#define GGUF_NO_MATMUL 1\n") + "\n".join(parts)


def available() -> bool:
    """True when MPS is usable and this torch can compile Metal shaders at run time."""
    return (hasattr(torch, "mps") and hasattr(torch.mps, "compile_shader")
            and torch.backends.mps.is_available())


@functools.cache
def _library(matmul: bool = False):
    return torch.mps.compile_shader(source(matmul))


def kernel_name(qtype, dtype: torch.dtype) -> str:
    return f"dequantize_{resolve(qtype).name.lower()}_{_SUFFIX[dtype]}"


def dequantize(blob, qtype, dtype: torch.dtype = torch.float32, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Dequantize an MPS uint8 blob with the run-time compiled kernels (same semantics as the reference)."""
    blob, t = check_blob(blob, qtype, dtype)
    if blob.device.type != "mps":
        raise ValueError(f"the run-time Metal path needs an mps tensor, got {blob.device}")
    if not available():
        raise RuntimeError("torch.mps.compile_shader is not available (needs torch >= 2.7 on a Mac with MPS)")
    shape = output_shape(tuple(blob.shape), t)
    launch.checked_threads(t, math.prod(shape))  # refuse an oversized launch before allocating
    target = torch.empty(shape, dtype=dtype, device=blob.device) if out is None else out
    if out is not None and (out.shape != shape or out.dtype != dtype or out.device != blob.device
                            or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {shape} on {blob.device}")
    n = target.numel()
    if n == 0:
        return target
    # The kernels read half fields in place and store 4 outputs at a time.
    src = blob.contiguous()
    if src.storage_offset() % 4:
        src = src.clone()
    dst = target if target.storage_offset() % 4 == 0 else torch.empty_like(target)
    _dispatch(_library(), t, src, dst, n)
    if dst is not target:
        target.copy_(dst)
    return target


def _dispatch(lib, qtype, src: torch.Tensor, dst: torch.Tensor, n: int) -> None:
    """Launch the kernel for ``qtype`` and ``dst.dtype`` from ``lib`` (a compile_shader library) over ``n``
    output elements, following ``launch.grid`` with the pipeline's own threadgroup limit."""
    fn = getattr(lib, kernel_name(qtype, dst.dtype))
    threads, group = launch.grid(qtype, n, fn.max_threads_per_threadgroup)
    fn(src, dst, n, threads=threads, group_size=group)


# ---- Compute on packed weights (metal/gguf_matmul.h; launch geometry in gguf_dequant.launch) ----------

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _need_mps(**tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.device.type != "mps":
            raise ValueError(f"the run-time Metal path needs mps tensors, but {name} is on {t.device}")
    if not available():
        raise RuntimeError("torch.mps.compile_shader is not available (needs torch >= 2.7 on a Mac with MPS)")


def _check_weights(blocks: torch.Tensor, t, k: int, rank: int) -> None:
    if blocks.dtype != torch.uint8:
        raise TypeError(f"blocks must be a uint8 tensor of raw GGUF bytes, got {blocks.dtype}")
    if blocks.dim() != rank:
        raise ValueError(f"blocks must have {rank} dimensions (..., bytes_per_row), got shape {tuple(blocks.shape)}")
    if k % t.block_elems:
        raise ValueError(f"{t.name}: K = {k} is not a multiple of the block size {t.block_elems}")
    bpr = k // t.block_elems * t.block_bytes
    if blocks.shape[-1] != bpr:
        raise ValueError(f"{t.name}: x has K = {k} columns, which need {bpr} bytes per weight row, but blocks "
                         f"have {blocks.shape[-1]}")
    if not blocks.is_contiguous():
        raise ValueError("blocks must be contiguous")


def _check_x(x: torch.Tensor, what: str = "x") -> None:
    if x.dtype not in _FLOATS:
        raise TypeError(f"{what} must be float32, float16 or bfloat16, got {x.dtype}")


def _aligned(t: torch.Tensor, elements: int = 4) -> torch.Tensor:
    # The kernels read half fields of the blocks in place, the mat-vec kernels x 4 elements at a time and
    # the float types' weight rows 16 bytes at a time.
    return t.clone() if t.storage_offset() % elements else t


def _matmul_kernel(name: str, group: int):
    """The run-time library's kernel ``name``, refusing a pipeline that cannot run the fixed threadgroup
    size the matmul geometry needs (its simdgroup layout and threadgroup tile depend on it)."""
    fn = getattr(_library(True), name)
    limit = getattr(fn, "max_threads_per_threadgroup", group)
    if limit < group:
        raise RuntimeError(f"{name}: the pipeline allows {limit} threads per threadgroup, but the kernel needs "
                           f"{group} (launch.matmul_grid); this device cannot run it")
    return fn


def _matmul(x2: torch.Tensor, blocks: torch.Tensor, t, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    m, k = x2.shape
    n = blocks.shape[0]
    if m == 0 or n == 0:
        return
    kind, (gx, gy), group = launch.matmul_grid(m, n)
    name = f"mul_{kind}_{t.name.lower()}_{_SUFFIX[x2.dtype]}_{_SUFFIX[out.dtype]}"
    b = x2 if bias is None else bias  # buffer 2 must be bound; not read without a bias
    _matmul_kernel(name, group)(_aligned(blocks, 16), _aligned(x2), b, out, k, n, m, int(bias is not None),
                                threads=(gx * group, gy), group_size=(group, 1))


def linear(x: torch.Tensor, blocks: torch.Tensor, qtype, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` with W the GGUF rows ``blocks`` (N, bytes_per_row), on MPS tensors; ``x`` (..., K)
    float32/float16/bfloat16; returns (..., N) in ``x.dtype`` (sum in float32, rounded once)."""
    t = resolve(qtype)
    _check_x(x)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (K)")
    _check_weights(blocks, t, x.shape[-1], 2)
    n = blocks.shape[0]
    if bias is not None:
        _check_x(bias, "bias")
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    _need_mps(x=x, blocks=blocks, bias=bias)
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
    _matmul(x2, blocks, t, None if bias is None else bias.to(torch.float32).contiguous(), out)
    return out.view(*x.shape[:-1], n)


def mul_mat_vec(blocks: torch.Tensor, x: torch.Tensor, qtype, out_features: int) -> torch.Tensor:
    """ggml-quantization's call shape: x (M, K) -> (M, out_features) float32."""
    t = resolve(qtype)
    _check_x(x)
    if x.dim() != 2:
        raise ValueError(f"x must be (M, K), got shape {tuple(x.shape)}")
    _check_weights(blocks, t, x.shape[1], 2)
    if blocks.shape[0] != out_features:
        raise ValueError(f"blocks have {blocks.shape[0]} rows but out_features is {out_features}")
    _need_mps(x=x, blocks=blocks)
    out = torch.empty(x.shape[0], out_features, dtype=torch.float32, device=x.device)
    _matmul(x.contiguous(), blocks, t, None, out)
    return out


def mul_mat_id(blocks: torch.Tensor, x: torch.Tensor, ids: torch.Tensor, qtype, out_features: int) -> torch.Tensor:
    """Mixture of experts: blocks (E, N, bytes_per_row), x (T, K) or (T, U, K), ids (T, U) int32/int64 ->
    (T, U, N) float32 with slot (t, u) = W[ids[t, u]] @ x[t] (or x[t, u]), the bits of a one-row linear on
    that expert. The expert is picked on the GPU (no host sort, no sync); an id outside [0, E) reads nothing
    and its row is NaN."""
    t = resolve(qtype)
    _check_x(x)
    if ids.dtype not in (torch.int32, torch.int64) or ids.dim() != 2:
        raise TypeError(f"ids must be a (T, U) int32 or int64 tensor, got {ids.dtype} of shape {tuple(ids.shape)}")
    n_tok, n_used = ids.shape
    if x.dim() not in (2, 3) or x.shape[0] != n_tok or (x.dim() == 3 and x.shape[1] != n_used):
        raise ValueError(f"x must be (T, K) or (T, U, K) with (T, U) = {tuple(ids.shape)}, got {tuple(x.shape)}")
    _check_weights(blocks, t, x.shape[-1], 3)
    n_exp, n = blocks.shape[0], blocks.shape[1]
    if n != out_features:
        raise ValueError(f"blocks have {n} rows per expert but out_features is {out_features}")
    _need_mps(x=x, blocks=blocks, ids=ids)
    out = torch.empty(n_tok, n_used, n, dtype=torch.float32, device=x.device)
    if out.numel() == 0:
        return out
    # Out-of-range ids stay out of range after the narrowing to int32 (no wrap onto a real expert).
    ids32 = torch.where((ids >= 0) & (ids < n_exp), ids, -1).to(torch.int32).contiguous()
    x3 = _aligned((x.unsqueeze(1) if x.dim() == 2 else x).contiguous())
    kind, (gx, gy, gz), group = launch.mul_mat_id_grid(n_tok, n_used, n, n_exp)
    scalars = [x.shape[-1], n, n_exp, n_used, x3.shape[1]] + ([n_tok * n_used] if kind == "mm_id" else [])
    _matmul_kernel(f"mul_{kind}_{t.name.lower()}_{_SUFFIX[x.dtype]}", group)(
        _aligned(blocks, 16), x3, ids32, out, *scalars, threads=(gx * group, gy, gz), group_size=(group, 1, 1))
    return out
