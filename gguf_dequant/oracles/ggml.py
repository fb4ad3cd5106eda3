"""llama.cpp's ggml C code as a test oracle, through ctypes.

Loads ``libggml-base.so`` (``.dylib`` on macOS; built by ``tools/build_ggml.sh``) from ``$GGML_LIBDIR`` or, when that is unset,
from ``<repo>/.cache/ggml/lib``. Exposes ggml's type traits, its ``to_float`` dequantizers (the CPU
reference every backend must match bit for bit) and ``ggml_quantize_chunk`` for realistic test blocks.

Calls that would crash the process are refused with a Python exception instead: ``to_float`` is a NULL
pointer for F32, Q8_1, Q8_K, the integer types, F64 and the removed ids, and ``ggml_quantize_chunk``
aborts on Q8_1 and Q8_K (oracles.md section 2.4).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIBDIR = ROOT / ".cache" / "ggml" / "lib"
SHARED_SUFFIX = ".dylib" if sys.platform == "darwin" else ".so"  # what tools/build_ggml.sh installs
LIBNAME = "libggml-base" + SHARED_SUFFIX
GGML_TYPE_COUNT = 43
_NO_QUANTIZE = {9: "Q8_1", 15: "Q8_K"}  # ggml_quantize_chunk hits GGML_ASSERT and aborts the process
_PLAIN_FLOATS = (0, 1, 30)  # F32, F16, BF16: ggml_quantize_chunk copies / converts them

TO_FLOAT_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits in ggml.h, field for field.
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class TypeTraits:
    id: int
    name: str
    blck_size: int
    type_size: int
    is_quantized: bool
    has_to_float: bool


class GgmlUnavailable(RuntimeError):
    """libggml-base could not be found or loaded."""


def libdir() -> Path:
    env = os.environ.get("GGML_LIBDIR")
    return Path(env) if env else DEFAULT_LIBDIR


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    path = libdir() / LIBNAME
    if not path.exists():
        how = "set GGML_LIBDIR" if os.environ.get("GGML_LIBDIR") else "run tools/build_ggml.sh"
        return None, f"ggml oracle not built: {path} does not exist ({how})"
    try:
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return None, f"ggml oracle could not be loaded from {path}: {exc}"
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib, ""


def available() -> bool:
    return _load()[0] is not None


def why_unavailable() -> str:
    """Empty when the library is loaded, else the reason it is not."""
    return _load()[1]


def _lib() -> ctypes.CDLL:
    lib, why = _load()
    if lib is None:
        raise GgmlUnavailable(why)
    return lib


def _check_id(type_id: int) -> int:
    type_id = int(type_id)
    if not 0 <= type_id < GGML_TYPE_COUNT:
        raise ValueError(f"ggml type ids are 0..{GGML_TYPE_COUNT - 1}, got {type_id}")
    return type_id


@functools.cache
def _raw_traits(type_id: int) -> _TypeTraits:
    ptr = _lib().ggml_get_type_traits(_check_id(type_id))
    if not ptr:
        raise ValueError(f"ggml has no type traits for id {type_id}")
    return ptr.contents


def type_traits(type_id: int) -> TypeTraits:
    """ggml's name, block size and bytes per block of a type id (and whether it has a to_float)."""
    tr = _raw_traits(_check_id(type_id))
    return TypeTraits(int(type_id), (tr.type_name or b"").decode(), int(tr.blck_size), int(tr.type_size),
                      bool(tr.is_quantized), bool(tr.to_float))


@functools.cache
def _to_float_fn(type_id: int):
    tr = _raw_traits(type_id)
    if not tr.to_float or tr.type_size == 0:
        name = (tr.type_name or b"?").decode()
        raise ValueError(f"ggml has no to_float for type id {type_id} ({name})")
    return TO_FLOAT_T(tr.to_float)


def _n_elements(type_id: int, nbytes: int) -> int:
    tr = _raw_traits(type_id)
    if nbytes % tr.type_size:
        raise ValueError(f"{nbytes} bytes is not a whole number of {tr.type_size}-byte blocks")
    return nbytes // tr.type_size * tr.blck_size


def to_float(type_id: int, raw) -> np.ndarray:
    """Dequantize whole blocks with ggml's to_float; returns a flat float32 array."""
    type_id = _check_id(type_id)
    fn = _to_float_fn(type_id)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        src = np.frombuffer(raw, dtype=np.uint8)
    else:
        src = np.ascontiguousarray(np.asarray(raw)).view(np.uint8).reshape(-1)
    n = _n_elements(type_id, src.size)
    out = np.empty(n, dtype=np.float32)
    if n:
        fn(src.ctypes.data, out.ctypes.data, n)
    return out


def to_float_into(type_id: int, src_ptr: int, dst_ptr: int, n: int) -> None:
    """Raw call for benchmarks: ``n`` elements from the blocks at address ``src_ptr`` into float32 at ``dst_ptr``.

    The caller guarantees both buffers are large enough (no checks beyond the type id).
    """
    _to_float_fn(_check_id(type_id))(src_ptr, dst_ptr, n)


def requires_imatrix(type_id: int) -> bool:
    return bool(_lib().ggml_quantize_requires_imatrix(_check_id(type_id)))


def row_size(type_id: int, n_per_row: int) -> int:
    return int(_lib().ggml_row_size(_check_id(type_id), n_per_row))


def quantize(type_id: int, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize float32 rows (nrows, n_per_row) with ggml_quantize_chunk; returns uint8 (nrows, row_bytes).

    Types that need an importance matrix get an all-ones one unless ``imatrix`` is given.
    """
    type_id = _check_id(type_id)
    if type_id in _NO_QUANTIZE:
        raise ValueError(f"ggml_quantize_chunk aborts the process on {_NO_QUANTIZE[type_id]} (id {type_id})")
    tr = _raw_traits(type_id)
    if not (tr.type_size and (tr.is_quantized or type_id in _PLAIN_FLOATS)):
        # ggml_quantize_chunk's switch has no case for these: its default asserts (or falls through).
        raise ValueError(f"ggml cannot quantize type id {type_id} ({(tr.type_name or b'?').decode()})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (nrows, n_per_row), got shape {x.shape}")
    nrows, n_per_row = x.shape
    if n_per_row % tr.blck_size:
        raise ValueError(f"n_per_row {n_per_row} is not a multiple of the block size {tr.blck_size}")
    lib = _lib()
    rb = row_size(type_id, n_per_row)
    out = np.zeros((nrows, rb), dtype=np.uint8)
    if imatrix is None and lib.ggml_quantize_requires_imatrix(type_id):
        imatrix = np.ones(n_per_row, dtype=np.float32)
    im = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n_per_row,):
            raise ValueError(f"imatrix must have shape ({n_per_row},), got {imatrix.shape}")
        im = imatrix.ctypes.data
    if nrows:
        written = lib.ggml_quantize_chunk(type_id, x.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, im)
        if written != nrows * rb:
            raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {nrows * rb}")
    return out
