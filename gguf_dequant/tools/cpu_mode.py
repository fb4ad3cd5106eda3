"""Compile one kernel file in CPU mode (plain C++, ``GGUF_CPU``) into a small shared library and run it.

This exercises exactly the decode functions the CPU backend compiles, without torch, so that each
type's math can be tested on its own. Libraries are cached under ``.cache/cpu_mode`` by source hash.

    lib = compile_type("Q4_0"); out = run(lib, "Q4_0", raw_bytes, torch.float16)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from ..launch import ELEMS_PER_THREAD
from ..types import kernel_file_name, resolve

ROOT = Path(__file__).resolve().parents[2]
METAL = ROOT / "metal"
SHIM = ROOT / "cpu" / "shim"
CACHE = ROOT / ".cache" / "cpu_mode"
OUT_KINDS = {torch.float32: ("f32", "float"), torch.float16: ("f16", "metal::half"),
             torch.bfloat16: ("bf16", "metal::bfloat")}


def kernel_file(qtype) -> Path:
    return METAL / kernel_file_name(qtype)


def compiler() -> str:
    for cxx in (os.environ.get("CXX"), "clang++-19", "c++", "g++"):
        if cxx and shutil.which(cxx):
            return cxx
    raise RuntimeError("no C++ compiler found (set CXX)")


def _wrapper(name: str) -> str:
    lines = ["#define GGUF_CPU 1", f'#include "{kernel_file(name).name}"']
    for suffix, ctype in OUT_KINDS.values():
        lines.append(f'extern "C" void run_{suffix}(const uchar *src, void *dst, long t0, long t1, long n) '
                     f'{{ cpu_dequantize_{name}<{ctype}>(src, static_cast<{ctype} *>(dst), t0, t1, n); }}')
    return "\n".join(lines) + "\n"


@functools.cache
def compile_type(qtype, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Build (or reuse) the CPU-mode library of one type's kernel file."""
    name = resolve(qtype).name.lower()
    return compile_source(name, _wrapper(name), extra_flags)


@functools.cache
def compile_source(name: str, src: str, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Build (or reuse) a shared library from C++ source that includes kernel files or the shim."""
    deps = sorted(METAL.glob("*.h")) + sorted(METAL.glob("*.metal")) + sorted(SHIM.glob("*"))
    digest = hashlib.sha256(src.encode() + " ".join((compiler(), *extra_flags)).encode()
                            + b"".join(p.read_bytes() for p in deps)).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    lib = CACHE / f"{name}-{digest}.so"
    if not lib.exists():
        cpp = CACHE / f"{name}-{digest}.cpp"
        cpp.write_text(src)
        cmd = [compiler(), "-std=c++17", "-O2", "-fPIC", "-shared", "-fno-strict-aliasing", "-Wall",
               "-Werror", "-Wno-unused-function", "-ffp-contract=off", f"-I{METAL}", f"-I{SHIM}",
               *extra_flags, str(cpp), "-o", str(lib) + ".tmp"]
        subprocess.run(cmd, check=True, capture_output=False)
        os.replace(str(lib) + ".tmp", lib)
    return ctypes.CDLL(str(lib))


def run(lib: ctypes.CDLL, qtype, raw: bytes | np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantize whole blocks ``raw`` with the CPU-mode library; returns a flat tensor of ``dtype``."""
    t = resolve(qtype)
    buf = np.frombuffer(bytes(raw), dtype=np.uint8).copy() if not isinstance(raw, np.ndarray) else np.ascontiguousarray(raw).reshape(-1)
    assert buf.size % t.block_bytes == 0
    n = buf.size // t.block_bytes * t.block_elems
    out = torch.empty(n, dtype=dtype)
    s = ELEMS_PER_THREAD[t.name]
    fn = getattr(lib, f"run_{OUT_KINDS[dtype][0]}")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long]
    if n:
        fn(buf.ctypes.data, out.data_ptr(), 0, -(-n // s), n)
    return out
