"""The ``gguf-dequant`` command: inspect a GGUF file, convert it to safetensors, benchmark the backends.

    gguf-dequant info FILE
    gguf-dequant convert FILE OUT.safetensors [--dtype {float32,float16,bfloat16}] [--device DEV]
                 [--on-unsupported {fail,skip}] [--backend B] [--no-progress]
    gguf-dequant bench [FILE] [--dtype D] [--device DEV] [--elements N] [--repeat R] [--types T,..]
                 [--chart OUT.png | --no-chart]

``convert`` streams tensor by tensor from the memory-mapped GGUF file into a safetensors file that it writes
itself: the header (all offsets computed from shapes and dtypes) first, then each tensor's bytes, so peak
memory is about one output tensor (a reused buffer sized for the largest one) plus a fixed overhead, not
the model size. Tensor names are kept; shapes are the logical ones (GGUF dims reversed, as numpy/torch
order them); the header's ``__metadata__`` holds the architecture, the GGUF type of every tensor and the
file's scalar metadata.

Errors (missing file, not a GGUF file, truncated file, unsupported tensor types, ...) print one line
``gguf-dequant: error: ...`` on stderr and exit with status 2, without a traceback.

``bench``'s header says whether the largest timed pass fits in the last-level cache: the default synthetic set
(4M elements per type) does on most machines, and then its GB/s are cache-resident, above what memory sustains.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import backends
from . import types as _types
from .types import SUPPORTED, QuantType

__all__ = ["main", "read_gguf", "GGUFFile", "TensorInfo", "CLIError", "convert", "DTYPES"]

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
EXIT_ERROR = 2

# Geometry of GGML types that exist but are not dequantization targets (for sizes and truncation checks).
_OTHER_GEOMETRY = {9: (32, 36), 15: (256, 292), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8)}
_OTHER_NAMES = {tid: name for name, tid in _types._REFUSED_NAMES.items()}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------- GGUF reading

@dataclass
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF (ggml) order: ne0 first
    type_id: int
    offset: int  # absolute file offset of the data

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical (numpy/torch) shape: the GGUF dims reversed."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)

    @property
    def qtype(self) -> QuantType | None:
        return SUPPORTED.get(self.type_id)

    @property
    def type_name(self) -> str:
        t = self.qtype
        if t is not None:
            return t.name
        return _OTHER_NAMES.get(self.type_id, f"unknown id {self.type_id}")

    @property
    def unsupported_reason(self) -> str | None:
        if self.qtype is not None:
            return None
        try:
            _types.resolve(self.type_id)
        except _types.UnsupportedTypeError as e:
            return str(e)
        return None  # pragma: no cover

    @property
    def n_bytes(self) -> int | None:
        t = self.qtype
        elems, nbytes = (t.block_elems, t.block_bytes) if t else _OTHER_GEOMETRY.get(self.type_id, (0, 0))
        if not elems:
            return None
        ne0 = self.dims[0] if self.dims else 1
        if ne0 % elems:
            return None
        return ne0 // elems * nbytes * math.prod(self.dims[1:])


@dataclass
class GGUFFile:
    path: Path
    version: int
    file_size: int
    alignment: int
    data_start: int
    metadata: dict = field(default_factory=dict)  # scalar values; arrays as ("array", type, count) summaries
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")


class _Cursor:
    def __init__(self, buf, size: int, path: Path):
        self.buf, self.size, self.pos, self.path = buf, size, 0, path

    def need(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise CLIError(f"{self.path}: truncated GGUF file: {what} at byte {self.pos} needs {n} bytes, "
                           f"but the file has only {self.size} bytes")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return values[0] if len(values) == 1 else values

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what + " length")
        if n > self.size:
            raise CLIError(f"{self.path}: corrupt GGUF file: {what} claims {n} bytes at byte {self.pos}")
        self.need(n, what)
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s


# GGUF metadata value types: id -> struct format (None: string / array).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
               8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}


def _value(cur: _Cursor, vtype: int, key: str):
    if vtype in _SCALAR:
        return cur.unpack(_SCALAR[vtype], f"value of {key!r}")
    if vtype == 8:
        return cur.string(f"value of {key!r}")
    if vtype == 9:
        itype = cur.unpack("<I", f"array type of {key!r}")
        count = cur.unpack("<Q", f"array length of {key!r}")
        if itype in _SCALAR:
            n = struct.calcsize(_SCALAR[itype]) * count
            cur.need(n, f"array {key!r}")
            cur.pos += n
        elif itype == 8:
            for _ in range(count):
                n = cur.unpack("<Q", f"string in array {key!r}")
                cur.need(n, f"string in array {key!r}")
                cur.pos += n
        else:
            raise CLIError(f"{cur.path}: corrupt GGUF file: array {key!r} has unsupported item type {itype}")
        return ("array", _TYPE_NAMES.get(itype, str(itype)), count)
    raise CLIError(f"{cur.path}: corrupt GGUF file: metadata {key!r} has unknown value type {vtype}")


def read_gguf(path, buf=None) -> GGUFFile:
    """Parse a GGUF file's header, metadata and tensor infos (no tensor data is read).

    Raises CLIError for a missing or unreadable file, a file that is not GGUF, an unsupported GGUF version,
    a truncated file (header or any tensor's data past the end) and corrupt headers.
    """
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    if path.is_dir():
        raise CLIError(f"{path}: is a directory, not a GGUF file")
    try:
        size = path.stat().st_size
        if buf is None:
            with open(path, "rb") as f:
                if size < 4 or f.read(4) != GGUF_MAGIC:
                    raise CLIError(f"{path}: not a GGUF file (it does not start with the magic bytes 'GGUF')")
                f.seek(0)
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                owned = True
        else:
            owned = False
    except OSError as e:
        raise CLIError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        if bytes(buf[:4]) != GGUF_MAGIC:
            raise CLIError(f"{path}: not a GGUF file (it does not start with the magic bytes 'GGUF')")
        cur = _Cursor(buf, size, path)
        cur.pos = 4
        version = cur.unpack("<I", "GGUF version")
        if version not in (2, 3):
            raise CLIError(f"{path}: GGUF version {version} is not supported (versions 2 and 3 are)")
        n_tensors = cur.unpack("<Q", "tensor count")
        n_kv = cur.unpack("<Q", "metadata count")
        if n_tensors > size or n_kv > size:
            raise CLIError(f"{path}: corrupt GGUF file: {n_tensors} tensors and {n_kv} metadata entries "
                           f"cannot fit in {size} bytes")
        metadata = {}
        for _ in range(n_kv):
            key = cur.string("metadata key")
            vtype = cur.unpack("<I", f"value type of {key!r}")
            metadata[key] = _value(cur, vtype, key)
        raw = []
        for i in range(n_tensors):
            name = cur.string(f"name of tensor {i}")
            n_dims = cur.unpack("<I", f"dimension count of {name!r}")
            if n_dims > 8:
                raise CLIError(f"{path}: corrupt GGUF file: tensor {name!r} has {n_dims} dimensions")
            dims = tuple(cur.unpack("<Q", f"dimensions of {name!r}") for _ in range(n_dims))
            type_id = cur.unpack("<I", f"type of {name!r}")
            offset = cur.unpack("<Q", f"data offset of {name!r}")
            raw.append((name, dims, type_id, offset))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CLIError(f"{path}: corrupt GGUF file: general.alignment {alignment!r} is not a power of two")
        data_start = -(-cur.pos // alignment) * alignment
        tensors = [TensorInfo(name, dims, type_id, data_start + offset) for name, dims, type_id, offset in raw]
        for t in tensors:
            n = t.n_bytes
            end = t.offset + (n or 0)
            if t.offset > size or end > size:
                raise CLIError(f"{path}: truncated GGUF file: tensor {t.name!r} ({t.type_name}, "
                               f"{n if n is not None else '?'} bytes at offset {t.offset}) ends past the end "
                               f"of the file ({size} bytes)")
            if t.qtype is not None and n is None:
                raise CLIError(f"{path}: corrupt GGUF file: tensor {t.name!r} has {t.dims[0]} elements per row, "
                               f"not a multiple of the {t.qtype.name} block size {t.qtype.block_elems}")
        return GGUFFile(path, version, size, alignment, data_start, metadata, tensors)
    finally:
        if owned:
            buf.close()


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


# --------------------------------------------------------------------------------------------------- info

def cmd_info(args) -> int:
    g = read_gguf(args.file)
    out = sys.stdout
    arch = g.architecture or "?"
    name = g.metadata.get("general.name")
    print(f"{g.path}: GGUF v{g.version}, {_fmt_bytes(g.file_size)}, {len(g.tensors)} tensors, "
          f"{len(g.metadata)} metadata entries, alignment {g.alignment}", file=out)
    print(f"architecture: {arch}" + (f", name: {name}" if isinstance(name, str) else ""), file=out)
    rows = [(t.name, t.type_name, "x".join(map(str, t.shape)) or "scalar", f"{t.n_elements:,}",
             _fmt_bytes(t.n_bytes), "yes" if t.qtype is not None else "no") for t in g.tensors]
    head = ("name", "type", "shape", "elements", "size", "supported")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    right = {3, 4}
    line = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    print(file=out)
    print(line(head).rstrip(), file=out)
    for r in rows:
        print(line(r).rstrip(), file=out)
    by_type: dict[str, list] = {}
    for t in g.tensors:
        by_type.setdefault(t.type_name, []).append(t)
    print(file=out)
    print("types:", file=out)
    for type_name, ts in sorted(by_type.items(), key=lambda kv: -sum(t.n_bytes or 0 for t in kv[1])):
        supported = ts[0].qtype is not None
        print(f"  {type_name:10s} {len(ts):5d} tensors  {_fmt_bytes(sum(t.n_bytes or 0 for t in ts)):>12s}  "
              + ("supported" if supported else f"NOT supported: {ts[0].unsupported_reason}"), file=out)
    bad = [t for t in g.tensors if t.qtype is None]
    if bad:
        print(f"{len(bad)} of {len(g.tensors)} tensors have types gguf-dequant cannot dequantize: "
              + ", ".join(f"{t.name} ({t.type_name})" for t in bad), file=out)
    else:
        print(f"all {len(g.tensors)} tensors can be dequantized", file=out)
    return 0


# ------------------------------------------------------------------------------------------------ convert

def _safetensors_header(tensors: list[TensorInfo], dtype: torch.dtype, metadata: dict) -> tuple[bytes, list[int]]:
    """The safetensors header bytes (8-byte length + JSON padded to 8) and each tensor's output byte size."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict = {"__metadata__": metadata}
    sizes, offset = [], 0
    for t in tensors:
        n = t.n_elements * itemsize
        header[t.name] = {"dtype": _ST_DTYPE[dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        sizes.append(n)
        offset += n
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text, sizes


def _metadata(g: GGUFFile, tensors: list[TensorInfo], dtype: torch.dtype, skipped: list[TensorInfo]) -> dict:
    scalars = {k: v for k, v in g.metadata.items() if not isinstance(v, tuple)}
    meta = {
        "format": "pt",
        "source": "gguf",
        "converted_by": f"gguf-dequant {_version()}",
        "dtype": str(dtype).replace("torch.", ""),
        "gguf.version": str(g.version),
        "gguf.architecture": str(g.architecture or ""),
        "gguf.tensor_types": json.dumps({t.name: t.type_name for t in tensors}, separators=(",", ":")),
        "gguf.metadata": json.dumps(scalars, separators=(",", ":"), ensure_ascii=False),
    }
    if skipped:
        meta["gguf.skipped_tensors"] = json.dumps({t.name: t.type_name for t in skipped}, separators=(",", ":"))
    return meta


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gguf-dequant")
    except Exception:  # noqa: BLE001
        return "0+unknown"


def _drop_pages(mm: mmap.mmap, start: int, length: int) -> None:
    """Tell the kernel the mapped input pages are no longer needed, so that they leave our RSS."""
    if length <= 0 or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    page = mmap.PAGESIZE
    begin = start - start % page
    try:
        mm.madvise(mmap.MADV_DONTNEED, begin, min(length + (start - begin), len(mm) - begin))
    except (OSError, ValueError):
        pass


def convert(path, out_path, dtype: torch.dtype = torch.float32, *, device: str = "cpu",
            on_unsupported: str = "fail", backend: str | None = None, progress: bool = False,
            log=None) -> dict:
    """Convert a GGUF file to safetensors, streaming one tensor at a time. Returns a summary dict."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    path, out_path = Path(path), Path(out_path)
    g = read_gguf(path)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise CLIError(f"--device {device!r}: {e}") from None
    try:
        backend_name, why = backends.explain(dev, backend=backend)
    except (backends.BackendUnavailableError, ValueError) as e:
        raise CLIError(str(e)) from None
    bad = [t for t in g.tensors if t.qtype is None]
    if bad:
        listing = ", ".join(f"{t.name} ({t.type_name})" for t in bad)
        if on_unsupported == "fail":
            raise CLIError(f"{len(bad)} tensor(s) have types gguf-dequant cannot dequantize: {listing} "
                           "(--on-unsupported skip leaves them out)")
        log(f"gguf-dequant: warning: skipping {len(bad)} tensor(s) with unsupported types: {listing}")
    tensors = [t for t in g.tensors if t.qtype is not None]
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise CLIError(f"{path}: corrupt GGUF file: duplicate tensor names")
    if not out_path.parent.exists():
        raise CLIError(f"{out_path.parent}: output directory does not exist")
    header, sizes = _safetensors_header(tensors, dtype, _metadata(g, tensors, dtype, bad))
    max_elems = max((t.n_elements for t in tensors), default=0)
    total = sum(sizes)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=out_path.name,
                   file=sys.stderr, dynamic_ncols=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    t0 = time.perf_counter()
    # One reused output buffer (CPU) sized for the largest tensor: memory stays ~ one output tensor.
    buf = torch.empty(max_elems, dtype=dtype)
    dev_buf = torch.empty(max_elems, dtype=dtype, device=dev) if dev.type != "cpu" and max_elems else None
    used = {}
    try:
        with open(path, "rb") as fin, open(tmp, "wb") as fout:
            mm = mmap.mmap(fin.fileno(), 0, access=mmap.ACCESS_COPY) if g.file_size else None
            try:
                fout.write(header)
                for i, (t, nbytes) in enumerate(zip(tensors, sizes)):
                    n = t.n_elements
                    if n:
                        blob = torch.frombuffer(mm, dtype=torch.uint8, count=t.n_bytes, offset=t.offset)
                        try:
                            if dev.type == "cpu":
                                result = buf[:n]
                                backends.dequantize(blob, t.qtype, dtype, out=result, backend=backend)
                            else:
                                result = dev_buf[:n]
                                backends.dequantize(blob.to(dev), t.qtype, dtype, out=result, backend=backend)
                                buf[:n].copy_(result)
                                result = buf[:n]
                        except backends.BackendUnavailableError as e:
                            raise CLIError(f"tensor {t.name!r}: {e}") from None
                        finally:
                            del blob
                        name, _ = backends.explain(dev, t.qtype, backend=backend)
                        used[name] = used.get(name, 0) + 1
                        fout.write(result.view(torch.uint8).numpy())
                        del result
                        _drop_pages(mm, t.offset, t.n_bytes)
                    if bar is not None:
                        bar.update(nbytes)
                        bar.set_postfix_str(f"{i + 1}/{len(tensors)} tensors", refresh=False)
            finally:
                if mm is not None:
                    try:
                        mm.close()
                    except BufferError:
                        pass
        os.replace(tmp, out_path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    return {"tensors": len(tensors), "skipped": [t.name for t in bad], "bytes_out": total + len(header),
            "seconds": seconds, "backend": backend_name, "why": why, "backends_used": used,
            "max_tensor_bytes": max(sizes, default=0)}


def cmd_convert(args) -> int:
    dtype = DTYPES[args.dtype]
    out = Path(args.out)
    if out.suffix != ".safetensors":
        print(f"gguf-dequant: note: writing safetensors to {out} (no .safetensors suffix)", file=sys.stderr)
    show = not args.no_progress and sys.stderr.isatty() if args.progress is None else args.progress
    s = convert(args.file, out, dtype, device=args.device, on_unsupported=args.on_unsupported,
                backend=args.backend, progress=show)
    used = ", ".join(f"{k} x{v}" for k, v in sorted(s["backends_used"].items())) or "none"
    print(f"wrote {out}: {s['tensors']} tensors, {_fmt_bytes(s['bytes_out'])}, {args.dtype}, "
          f"{s['seconds']:.2f} s ({used}; {s['why']})"
          + (f"; skipped {len(s['skipped'])} unsupported" if s["skipped"] else ""))
    return 0


# -------------------------------------------------------------------------------------------------- bench

def _gguf_py_fn(t: QuantType):
    """gguf-py's dequantize for this type, or None when gguf-py lacks it (or, for F32, does no work: it
    returns a view of the input, so a timing would measure nothing)."""
    import gguf

    if t.name == "F32":
        return None

    try:
        qt = gguf.GGMLQuantizationType[t.name]
    except KeyError:
        return None
    probe = np.zeros((1, t.block_bytes), dtype=np.uint8)
    try:
        gguf.quants.dequantize(probe, qt)
    except NotImplementedError:
        return None
    return lambda raw: gguf.quants.dequantize(raw, qt)


def _best(fn, repeat: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _bench_sets(args) -> list[tuple[QuantType, list[np.ndarray]]]:
    """(type, [blobs as (rows, row_bytes) uint8 arrays]) for the synthetic set or the file's tensors."""
    wanted = None
    if args.types:
        try:
            wanted = {_types.resolve(n).id for n in args.types.split(",") if n.strip()}
        except (_types.UnsupportedTypeError, TypeError) as e:
            raise CLIError(f"--types: {e}") from None
    sets = []
    if args.file is None:
        from .blocks import random_blocks

        rng = np.random.default_rng(0)
        for t in SUPPORTED.values():
            if wanted is not None and t.id not in wanted:
                continue
            row_elems = max(4096, t.block_elems)
            rows = max(1, args.elements // row_elems)
            raw = random_blocks(t, rows * row_elems // t.block_elems, rng).reshape(rows, -1)
            sets.append((t, [raw]))
        return sets
    g = read_gguf(args.file)
    data = np.memmap(g.path, dtype=np.uint8, mode="r")
    by_type: dict[int, list] = {}
    budget: dict[int, int] = {}
    for ti in g.tensors:
        if ti.qtype is None or (wanted is not None and ti.type_id not in wanted) or not ti.n_elements:
            continue
        if budget.get(ti.type_id, 0) >= args.max_bytes:
            continue
        t = ti.qtype
        rows = math.prod(ti.dims[1:])
        raw = np.array(data[ti.offset:ti.offset + ti.n_bytes]).reshape(rows, -1)
        by_type.setdefault(t.id, []).append(raw)
        budget[t.id] = budget.get(t.id, 0) + ti.n_bytes
    skipped = sorted({ti.type_name for ti in g.tensors if ti.qtype is None})
    if skipped:
        print(f"gguf-dequant: note: not benchmarked (unsupported types): {', '.join(skipped)}", file=sys.stderr)
    return [(SUPPORTED[tid], blobs) for tid, blobs in by_type.items()]


def cmd_bench(args) -> int:
    dtype = DTYPES[args.dtype]
    try:
        dev = torch.device(args.device)
    except (RuntimeError, TypeError) as e:
        raise CLIError(f"--device {args.device!r}: {e}") from None
    if args.repeat < 1 or args.elements < 1:
        raise CLIError("--repeat and --elements must be positive")
    sets = _bench_sets(args)
    if not sets:
        raise CLIError("nothing to benchmark (no supported tensors matched)")
    names = backends.available_backends(dev)
    for name in names:
        print(f"backend {name}: {backends._status(name, dev.type)[1]}", file=sys.stderr)
    itemsize = torch.empty((), dtype=dtype).element_size()
    results = []  # (type, backend, elements, seconds)
    pass_bytes = 0  # the largest input + output of one timed pass (cache residency)
    for t, blobs in sets:
        n = sum(b.shape[0] * (b.shape[1] // t.block_bytes) * t.block_elems for b in blobs)
        pass_bytes = max(pass_bytes, sum(b.nbytes for b in blobs) + n * itemsize)
        py = _gguf_py_fn(t)
        if py is not None:
            results.append((t.name, "gguf-py", n, _best(lambda: [py(b) for b in blobs], args.repeat)))
        tensors = [torch.from_numpy(b).to(dev) for b in blobs]
        outs = [torch.empty((b.shape[0], b.shape[1] // t.block_bytes * t.block_elems), dtype=dtype, device=dev)
                for b in blobs]
        sync = (lambda: torch.mps.synchronize()) if dev.type == "mps" else (
            (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None))
        for name in names:
            try:
                backends.explain(dev, t, backend=name)
            except backends.BackendUnavailableError as e:
                print(f"gguf-dequant: note: {t.name} not benchmarked on {name}: {e}", file=sys.stderr)
                continue

            def run(name=name):
                for b, o in zip(tensors, outs):
                    backends.dequantize(b, t, dtype, out=o, backend=name)
                sync()

            results.append((t.name, name, n, _best(run, args.repeat)))
        line = "  ".join(f"{b} {n * itemsize / s / 1e9:.2f} GB/s" for tn, b, n, s in results if tn == t.name)
        print(f"{t.name:8s} {line}", file=sys.stderr, flush=True)
    _print_table(results, itemsize, args, dev, pass_bytes)
    if not args.no_chart:
        _chart(results, itemsize, Path(args.chart), args)
    return 0


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache of this machine (Linux sysfs), or None when unknown."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    return max(sizes, default=None)


def _cache_note(pass_bytes: int, dev, itemsize: int) -> str:
    """Whether one timed pass over a type's buffers fits in the last-level cache (then the figures are
    cache-resident: repeated passes find input and output in cache, above what memory sustains)."""
    mib = pass_bytes / (1 << 20)
    llc = last_level_cache_bytes() if dev.type == "cpu" else None
    if llc is None:
        return f"largest pass {mib:.0f} MiB of input and output; last-level cache size unknown"
    if pass_bytes <= llc:
        return (f"CACHE-RESIDENT figures: the largest pass ({mib:.0f} MiB of input and output) fits in the "
                f"{llc / (1 << 20):.0f} MiB last-level cache, so GB/s can exceed memory bandwidth; for DRAM-bound "
                f"figures pass --elements above {2 * llc // itemsize:,}")
    return (f"the largest pass ({mib:.0f} MiB of input and output) exceeds the {llc / (1 << 20):.0f} MiB last-level "
            "cache (smaller passes may fit in it)")


def _print_table(results, itemsize: int, args, dev, pass_bytes: int) -> None:
    py = {tn: s for tn, b, n, s in results if b == "gguf-py"}
    src = str(args.file) if args.file else f"synthetic random blocks, {args.elements:,} elements per type"
    threads = f"{torch.get_num_threads()} threads" if dev.type == "cpu" else str(dev)
    print(f"# gguf-dequant bench: {src}; output {args.dtype} on {dev} ({threads}; gguf-py: numpy, 1 thread); "
          f"best of {args.repeat} after a warm-up; GB/s = output bytes per second (gguf-py always produces "
          f"float32); {_cache_note(pass_bytes, dev, itemsize)}")
    print()
    print("| type | backend | elements | ms | GB/s | vs gguf-py |")
    print("|---|---|---:|---:|---:|---:|")
    for tn, b, n, s in results:
        size = n * (4 if b == "gguf-py" else itemsize)
        r = py[tn] / s if tn in py and b != "gguf-py" else None
        ratio = "1.0x" if b == "gguf-py" else ("–" if r is None else f"{r:.1f}x" if r >= 0.1 else f"{r:.3f}x")
        print(f"| {tn} | {b} | {n:,} | {s * 1e3:.2f} | {size / s / 1e9:.2f} | {ratio} |")
    if any(tn == "F32" for tn, *_ in results):
        print()
        print("No gguf-py row for F32: gguf-py returns F32 data as a view of the input, so there is no work to time.")


def _chart(results, itemsize: int, out: Path, args) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("gguf-dequant: note: matplotlib is not installed, no chart written", file=sys.stderr)
        return
    types_ = list(dict.fromkeys(tn for tn, *_ in results))
    bnames = list(dict.fromkeys(b for _, b, *_ in results))
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.5 * len(types_) + 2)), 6))
    width = 0.8 / max(1, len(bnames))
    for j, b in enumerate(bnames):
        xs, ys = [], []
        for i, tn in enumerate(types_):
            for tn2, b2, n, s in results:
                if tn2 == tn and b2 == b:
                    xs.append(i + (j - (len(bnames) - 1) / 2) * width)
                    ys.append(n * (4 if b == "gguf-py" else itemsize) / s / 1e9)
        ax.bar(xs, ys, width, label=b)
    ax.set_xticks(range(len(types_)))
    ax.set_xticklabels(types_, rotation=60, ha="right")
    ax.set_ylabel("GB/s of output")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f"gguf-dequant: dequantization throughput ({args.dtype} output; gguf-py float32)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        raise CLIError(f"{out}: cannot write the chart: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    print(f"wrote chart {out}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gguf-dequant",
                                 description="Inspect GGUF files, convert them to safetensors, benchmark dequantization.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="list every tensor's name, type, logical shape and size, and which types are supported")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="dequantize a GGUF file into a safetensors file, one tensor at a time")
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, metavar="OUT.safetensors")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="output dtype (default float32)")
    p.add_argument("--device", default="cpu", help="device to dequantize on (cpu, mps, cuda, ...; default cpu)")
    p.add_argument("--on-unsupported", choices=["fail", "skip"], default="fail",
                   help="what to do with tensors of types that cannot be dequantized (default fail)")
    p.add_argument("--backend", choices=["auto", *backends.BACKENDS], default=None,
                   help=f"force a backend (default: ${backends.ENV_BACKEND}, else automatic)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar (default: when stderr is a terminal)")
    g.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bench", help="throughput per type and backend, with the ratio to gguf-py, and a PNG chart")
    p.add_argument("file", type=Path, nargs="?", default=None,
                   help="GGUF file whose tensors to benchmark (default: built-in synthetic set of every type)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--elements", type=int, default=1 << 22, help="elements per type in the synthetic set (default 4M)")
    p.add_argument("--max-bytes", type=int, default=256 << 20,
                   help="with a file: at most about this many input bytes per type (default 256 MiB)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per measurement, best taken (default 7)")
    p.add_argument("--types", default=None, help="comma-separated types to include (default all)")
    p.add_argument("--chart", default="gguf-dequant-bench.png", help="PNG chart path (default gguf-dequant-bench.png)")
    p.add_argument("--no-chart", action="store_true", help="do not write the chart")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "backend", None) == "auto":
        args.backend = None
    if getattr(args, "backend", None) is None:
        try:
            backends._forced(None)
        except ValueError as e:
            print(f"gguf-dequant: error: {e}", file=sys.stderr)
            return EXIT_ERROR
    try:
        return args.func(args)
    except CLIError as e:
        print(f"gguf-dequant: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("gguf-dequant: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"gguf-dequant: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
