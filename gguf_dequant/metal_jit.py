"""No-build Metal path: compile metal/*.metal at run time with ``torch.mps.compile_shader``.

Hub Metal builds need macOS 26 and the exact torch minor version they were built for. On any other Mac
with MPS (torch >= 2.7), this module compiles the same kernel sources on first use and dispatches them on
MPS tensors with the launch description of ``gguf_dequant.launch``.

``source(matmul, qtype)`` is the exact string handed to the Metal compiler: a type's kernel file (or every
kernel file, without ``qtype``) with the project's own headers inlined (compile_shader has no include path).
The Linux harness compiles and runs these strings too. The first call for a type compiles that type's file
only: its dequantize kernels (with GGUF_NO_MATMUL defined: 3 kernels, so dequantizing never waits for the
matmul kernels to compile), or with ``linear``, ``mul_mat_vec`` and ``mul_mat_id`` everything in the file
(20 kernels for a quantized type; 60 for ``float.metal``, which holds F32, F16 and BF16); not the 532 entry points
of all types at once.

bfloat needs the Metal Shading Language 3.1 (macOS 14): compile_shader compiles the language of the running
macOS, and on macOS 13 (MSL 3.0) the bfloat kernels are left out of the source (``__METAL_VERSION__``):
``dtypes()`` says which dtypes this Mac's run-time library offers, and a bfloat16 call raises a TypeError
that says so.
"""

from __future__ import annotations

import functools
import math
import platform
import re
from pathlib import Path

import torch

from . import launch, types
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
    return [METAL_DIR / n for n in types.kernel_files()]


def source(matmul: bool = False, qtype=None) -> str:
    """The kernel files (only ``qtype``'s with a type) in one translation unit, our headers inlined once each;
    without ``matmul`` the GGUF_MATMUL_*_KERNELS lines expand to nothing."""
    return _source(matmul, None if qtype is None else types.kernel_file_name(qtype))


@functools.cache
def _source(matmul: bool, file_name: str | None) -> str:
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

    files = kernel_files() if file_name is None else [METAL_DIR / file_name]
    parts = [f"// ==== {p.name} ====\n" + expand(p) for p in files]
    return ("" if matmul else "#define GGUF_NO_MATMUL 1\n") + "\n".join(parts)


def msl_version() -> int:
    """``__METAL_VERSION__`` of what compile_shader compiles on this machine: the running macOS's language
    (macOS 13: 300, 14: 310, 15: 320, 26: 400); 310 elsewhere (what the Linux harness compiles)."""
    release = platform.mac_ver()[0]
    if not release:
        return 310
    major = int(release.split(".")[0])
    return {13: 300, 14: 310, 15: 320}.get(major, 300 if major < 13 else 400)


def dtypes() -> tuple[torch.dtype, ...]:
    """The output (and activation) dtypes of the run-time library on this machine."""
    return tuple(_SUFFIX) if msl_version() >= 310 else (torch.float32, torch.float16)


def supports(qtype, dtype: torch.dtype) -> bool:
    """Whether the run-time library here has ``qtype``'s kernels for ``dtype`` (the BF16 weight type, like
    bfloat16 data, needs MSL 3.1)."""
    bfloat = torch.bfloat16 in dtypes()
    return dtype in dtypes() and (bfloat or resolve(qtype).name != "BF16")


def _need_dtype(qtype, *dtypes_used: torch.dtype) -> None:
    for dtype in dtypes_used:
        if not supports(qtype, dtype):
            raise TypeError(f"the run-time Metal path has no {resolve(qtype).name} kernels for {dtype} on this Mac: "
                            f"bfloat needs the Metal Shading Language 3.1 (macOS 14), and compile_shader compiles "
                            f"MSL {msl_version() / 100:.1f} here; use float32 or float16, or the reference")


def available() -> bool:
    """True when MPS is usable and this torch can compile Metal shaders at run time."""
    return (hasattr(torch, "mps") and hasattr(torch.mps, "compile_shader")
            and torch.backends.mps.is_available())


def _library(qtype, matmul: bool = False):
    """The compiled library holding ``qtype``'s kernels (its kernel file's), compiled on first use."""
    return _compiled(types.kernel_file_name(qtype), matmul)


@functools.cache
def _compiled(file_name: str, matmul: bool):
    return torch.mps.compile_shader(_source(matmul, file_name))


def kernel_name(qtype, dtype: torch.dtype) -> str:
    return f"dequantize_{resolve(qtype).name.lower()}_{_SUFFIX[dtype]}"


def dequantize(blob, qtype, dtype: torch.dtype = torch.float32, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Dequantize an MPS uint8 blob with the run-time compiled kernels (same semantics as the reference)."""
    blob, t = check_blob(blob, qtype, dtype)
    if blob.device.type != "mps":
        raise ValueError(f"the run-time Metal path needs an mps tensor, got {blob.device}")
    if not available():
        raise RuntimeError("torch.mps.compile_shader is not available (needs torch >= 2.7 on a Mac with MPS)")
    _need_dtype(t, dtype)
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
    _dispatch(_library(t), t, src, dst, n)
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


def _matmul_kernel(t, name: str, group: int):
    """Kernel ``name`` of type ``t``'s run-time library, refusing a pipeline that cannot run the fixed
    threadgroup size the matmul geometry needs (its simdgroup layout and threadgroup tile depend on it)."""
    fn = getattr(_library(t, True), name)
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
    kind, (gx, gy), group = launch.matmul_grid(m, n, qtype=t.name)
    name = f"mul_{kind}_{t.name.lower()}_{_SUFFIX[x2.dtype]}_{_SUFFIX[out.dtype]}"
    b = x2 if bias is None else bias  # buffer 2 must be bound; not read without a bias
    _need_dtype(t, x2.dtype, out.dtype)
    _matmul_kernel(t, name, group)(_aligned(blocks, 16), _aligned(x2), b, out, k, n, m, int(bias is not None),
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
    (T, U, N) float32 with slot (t, u) = W[ids[t, u]] @ x[t] (or x[t, u]), the bits of a row of the same tier
    on that expert (the mat-vec tier up to 8 tokens, the matrix tier above), whatever the other slots route
    to. The experts are picked and grouped on the GPU (no host sort, no sync); an id outside [0, E) reads
    nothing and its row is NaN."""
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
    scalars = [x.shape[-1], n, n_exp, n_used, x3.shape[1]]
    buffers = [_aligned(blocks, 16), x3, ids32, out]
    if kind == "mm_id":  # the slots listed per expert on the GPU first (the map), then the tiles
        map_groups, map_group, words = launch.mul_mat_id_map_grid(n_tok, n_used, n_exp)
        buffers.append(torch.empty(words, dtype=torch.int32, device=x.device))
        scalars.append(n_tok * n_used)
        _matmul_kernel(t, f"mul_mm_id_map_{t.name.lower()}", map_group)(
            *buffers, *scalars, threads=map_groups * map_group, group_size=map_group)
    _need_dtype(t, x.dtype)
    _matmul_kernel(t, f"mul_{kind}_{t.name.lower()}_{_SUFFIX[x.dtype]}", group)(
        *buffers, *scalars, threads=(gx * group, gy, gz), group_size=(group, 1, 1))
    return out
