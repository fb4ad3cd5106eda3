"""No-build Metal path: compile metal/*.metal at run time with ``torch.mps.compile_shader``.

Hub Metal builds need macOS 26 and the exact torch minor version they were built for. On any other Mac
with MPS (torch >= 2.7), this module compiles the same kernel sources into one library on first use and
dispatches them on MPS tensors with the launch description of ``gguf_dequant.launch``.

``source()`` is the exact string handed to the Metal compiler: every kernel file with the project's own
headers inlined (compile_shader has no include path). The Linux harness compiles and runs this string too.
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
def source() -> str:
    """All kernel files in one translation unit, our headers inlined once each."""
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
    return "\n".join(parts)


def available() -> bool:
    """True when MPS is usable and this torch can compile Metal shaders at run time."""
    return (hasattr(torch, "mps") and hasattr(torch.mps, "compile_shader")
            and torch.backends.mps.is_available())


@functools.cache
def _library():
    return torch.mps.compile_shader(source())


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
