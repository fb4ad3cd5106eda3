"""Linux shader harness: compile a .metal file with clang-19 as C++ for OpenCL and run its kernels on the CPU.

The .metal file is compiled against our own ``harness/shim/metal_stdlib`` in strict mode (real address
spaces, no ``double``; msl-on-linux.md sections 2-4). Kernel entry points are found in the *preprocessed*
source (the GGUF_*_KERNELS macros produce them), ``[[host_name("...")]]`` is blanked (column-preserving)
and an ``extern "C"`` launcher is generated per host name. A launch first runs serially (threadgroups and
their threads in a loop, Metal ``dispatchThreads`` semantics: threads outside the grid of a partial last
group are skipped); a kernel that synchronises (barriers, SIMD-group functions, threadgroup memory) is
rerun on the fiber scheduler (``scheduler.py``, ``runtime/scheduler.c``). Kernel-scope threadgroup arrays
and function constants are rewritten on their own lines; threadgroup loads and stores are checked in the
optimised IR (``instrument.py``). What it emulates and what it cannot: ``harness/README.md``.

Buffers are copied into memory placed flush against ``PROT_NONE`` guard pages (one before, one after),
so an out-of-bounds access faults at once (``faulthandler`` prints the Python stack). Output buffers
(non-const ``device`` parameters) are pre-filled with a poison byte; elements still all-poison after the
run are reported as unwritten. Builds are cached by content hash under ``<repo>/.cache/msl/``.

    lib = compile("metal/q4_0.metal")
    res = lib.dispatch_threads("dequantize_q4_0_f32", [src, dst, np.uint64(n)], threads=t, group=256)
    dequantize("Q4_0", raw_bytes, torch.float16)      # the whole launch as gguf_dequant.launch describes it

CLI: ``python -m harness.msl_harness metal/q4_0.metal [--ubsan] [--run Q4_0 --blocks N]``.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import faulthandler
import functools
import hashlib
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import instrument, scheduler, trace as tracing

ROOT = Path(__file__).resolve().parents[1]
METAL = ROOT / "metal"
SHIM = ROOT / "harness" / "shim"
CACHE = Path(os.environ.get("MSL_CACHE", ROOT / ".cache" / "msl"))
CLANG = os.environ.get("MSL_CLANG", "clang-19")
HARNESS_VERSION = "3"  # bump when the generated code changes

# msl-on-linux.md 2.2, strict ("OCL") mode.
OCL_FLAGS = ["-x", "clcpp", "-cl-std=clc++2021", "-cl-no-stdinc", "-target", "x86_64-linux-gnu",
             "-Xclang", "-cl-ext=-cl_khr_fp64,-__opencl_c_fp64"]
COMMON_FLAGS = ["-fPIC", "-O2", "-Wall", "-Wno-unknown-attributes", "-Wno-unused-function",
                "-fno-fast-math", "-ffp-contract=off",
                "-fstack-clash-protection"]  # big frames touch each page: a fiber's guard page catches them
PRELUDE_FLAGS = ["-include", "metal_types"]  # the scalar types Metal has before any #include (shim/metal_types)
DEBUG_FLAGS = ["-gline-tables-only"]  # faults in fibers are reported as file:line
IR_FLAGS = ["-Xclang", "-ffake-address-space-map"]  # threadgroup = addrspace(3) for harness/instrument.py
TRACE_FLAGS = ["-fno-vectorize", "-fno-slp-vectorize"]  # trace builds: each lane's work stays scalar, as on a GPU
UBSAN_FLAGS = ["-fsanitize=undefined"]  # with the shared UBSan runtime; reports become MslError
# Flush-to-zero mode (Metal fast math may flush float denormals): the optimizer folds and simplifies with
# denormals flushed (LLVM's "denormal-fp-math" attribute), and the launcher sets MXCSR FTZ|DAZ while the
# kernel runs, so computed subnormals become 0 and subnormal operands read as 0. Half and bfloat
# conversions are software (compiler-rt) and keep subnormals.
FTZ_FLAGS = ["-fdenormal-fp-math=preserve-sign", "-DMSL_HARNESS_FTZ=1"]
LAUNCHER_FILE = "<harness-launcher>"  # the file name the generated launchers' lines carry
MARK = "__msl_kernel"  # what `kernel` expands to when the shim is asked to mark entry points

SIMD_WIDTH = 32
MAX_THREADS_PER_GROUP = 1024

if not faulthandler.is_enabled():
    faulthandler.enable()


class MslError(RuntimeError):
    """A .metal file could not be prepared, compiled or launched."""


def available() -> bool:
    """True if clang-19 is installed (the harness needs nothing else)."""
    return shutil.which(CLANG) is not None


@functools.cache
def _clang_version() -> str:
    return subprocess.run([CLANG, "--version"], capture_output=True, text=True, check=True).stdout


@functools.cache
def compiler_rt_builtins() -> str:
    """libclang_rt.builtins-x86_64.a: bf16 conversions (__truncsfbf2) are missing from libgcc 12."""
    out = subprocess.run([CLANG, "-print-libgcc-file-name", "--rtlib=compiler-rt"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).exists():
        raise MslError(f"compiler-rt builtins not found at {out} (install libclang-rt-19-dev)")
    return out


# ----------------------------------------------------------------------------------------------------
# Preprocessing and parsing
# ----------------------------------------------------------------------------------------------------

def preprocess(path, include_dirs=(), defines=(), source: str | None = None) -> str:
    """``clang-19 -E`` in strict mode with the shim, entry points marked by ``__msl_kernel``."""
    path = Path(path)
    cmd = [CLANG, *OCL_FLAGS, f"-I{SHIM}", *PRELUDE_FLAGS, f"-I{path.parent}", *[f"-I{d}" for d in include_dirs],
           "-DMSL_HARNESS_MARK_KERNELS=1", *[f"-D{d}" for d in defines], "-E"]
    if source is None:
        cmd.append(str(path))
        proc = subprocess.run(cmd, capture_output=True, text=True)
    else:
        cmd += ["-"]
        proc = subprocess.run(cmd, input=source, capture_output=True, text=True)
    if proc.returncode:
        raise MslError(f"preprocessing {path} failed:\n{proc.stderr}")
    return proc.stdout


_LINEMARK = re.compile(r'^#\s*(?:line\s+)?(\d+)\s+"((?:[^"\\]|\\.)*)"[^\n]*$', re.M)


def mask(text: str) -> str:
    """Same-length copy of preprocessed text with line markers, pragmas, comments, string and character
    literals blanked, for structural scanning."""
    out = list(text)
    i, n = 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if line_start and c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
            continue
        if c == "\n":
            line_start = True
            i += 1
            continue
        if c in " \t":
            i += 1
            continue
        line_start = False
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = [ch if ch == "\n" else " " for ch in text[i:j]]
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out[i + 1:j] = " " * (j - i - 1)
            i = j + 1
        else:
            i += 1
    return "".join(out)


class LineMap:
    """Maps offsets in preprocessed text to (original file, line) through the line markers."""

    def __init__(self, text: str):
        self.starts: list[int] = []
        self.entries: list[tuple[str, int]] = []  # (file, line of the text following the marker)
        for m in _LINEMARK.finditer(text):
            self.starts.append(m.end() + 1)
            self.entries.append((m.group(2).encode().decode("unicode_escape"), int(m.group(1))))
        self.text = text

    def locate(self, offset: int) -> tuple[str, int]:
        import bisect
        k = bisect.bisect_right(self.starts, offset) - 1
        if k < 0:
            return "<unknown>", self.text.count("\n", 0, offset) + 1
        file, line = self.entries[k]
        return file, line + self.text.count("\n", self.starts[k], offset)


@dataclasses.dataclass
class Param:
    index: int
    text: str            # declaration text without attributes (preprocessed spelling)
    attr: str | None     # "buffer", "thread_position_in_grid", ...
    attr_arg: int | None
    offset: int

    @property
    def type_text(self) -> str:
        return re.sub(r"\b[A-Za-z_]\w*\s*(\[[^\]]*\]\s*)*$", "", self.text.strip()).strip() or self.text.strip()

    @property
    def is_pointer(self) -> bool:
        return "*" in self.type_text

    @property
    def is_reference(self) -> bool:
        return "&" in self.type_text

    @property
    def address_space(self) -> str | None:
        m = re.search(r"\b__(global|constant|local|private|generic)\b", self.type_text)
        return m.group(1) if m else None

    @property
    def writable(self) -> bool:
        """A device buffer the kernel may write (non-const pointee)."""
        if not (self.is_pointer or self.is_reference) or self.address_space != "global":
            return False
        pointee = re.split(r"[*&]", self.type_text)[0]
        return not re.search(r"\bconst\b", pointee)


@dataclasses.dataclass
class Kernel:
    name: str
    template: bool
    params: list[Param]
    offset: int
    host_name: str | None = None  # a host_name attribute on a non-template definition
    location: str = "?"           # file:line of the definition
    max_threads: int | None = None  # [[max_total_threads_per_threadgroup(n)]]
    threadgroup_vars: list[str] = dataclasses.field(default_factory=list)  # rewritten kernel-scope arrays


@dataclasses.dataclass
class Entry:
    host_name: str
    function: str
    targs: str | None
    kernel: Kernel


def _match(masked: str, i: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket matching masked[i] == open_c."""
    depth = 0
    for j in range(i, len(masked)):
        c = masked[j]
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    raise MslError(f"unbalanced {open_c}{close_c} at offset {i}")


def _split_params(masked: str, start: int, stop: int) -> list[tuple[int, int]]:
    spans, depth, s = [], 0, start
    for j in range(start, stop):
        c = masked[j]
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == "," and depth == 0:
            spans.append((s, j))
            s = j + 1
    if masked[s:stop].strip():
        spans.append((s, stop))
    return spans


_ATTR = re.compile(r"\[\[(.*?)\]\]", re.S)
_HOST_NAME = re.compile(r'\[\[\s*host_name\s*\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)\s*\]\]')


def _parse_params(text: str, masked: str, start: int, stop: int) -> list[Param]:
    params = []
    for k, (a, b) in enumerate(_split_params(masked, start, stop)):
        seg = text[a:b]
        attr = attr_arg = None
        for m in _ATTR.finditer(seg):
            am = re.match(r"\s*([A-Za-z_][\w:]*)\s*(?:\(\s*(\d+)\s*\))?\s*$", m.group(1))
            if am:
                attr = {"__local": "threadgroup"}.get(am.group(1), am.group(1))  # the macro expanded it
                attr_arg = int(am.group(2)) if am.group(2) else None
        clean = _ATTR.sub(lambda m: " " * len(m.group()), seg)
        if clean.strip() in ("", "void"):
            continue
        params.append(Param(k, " ".join(clean.split()), attr, attr_arg, a))
    return params


def _implicit_buffer_indices(params: list[Param]) -> list[Param]:
    """Device and constant pointer/reference parameters without an attribute are buffers too: Metal gives
    them the lowest indices that no ``[[buffer(n)]]`` claims, in declaration order (llama.cpp's kernels
    rely on it: args, src0, src1, dst at 0, 1, 2, 3)."""
    taken = {p.attr_arg for p in params if p.attr == "buffer"}
    index = 0
    for p in params:
        if p.attr is None and (p.is_pointer or p.is_reference) and p.address_space in ("global", "constant"):
            while index in taken:
                index += 1
            p.attr, p.attr_arg = "buffer", index
            taken.add(index)
    return params


def _string_value(literals: str) -> str:
    return "".join(bytes(s, "utf-8").decode("unicode_escape") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', literals))


@dataclasses.dataclass
class Prepared:
    """A .metal file preprocessed, parsed and rewritten so that clang accepts it."""
    path: Path
    pre: str            # preprocessed text (entry points marked)
    source: str         # compilable text: marks and host_name attributes blanked
    kernels: dict[str, Kernel]
    entries: list[Entry]
    lines: LineMap


def parse(path, pre: str, function_constants=None) -> Prepared:
    masked = mask(pre)
    # host_name attributes (string literals are blanked in `masked`, so search the text; skip line markers)
    src = list(pre)
    lines = LineMap(pre)
    rewrites: list[tuple[int, int, str]] = []  # kernel-scope threadgroup declarations
    kernels: dict[str, Kernel] = {}
    insts: list[tuple[str, str, str | None]] = []
    for m in re.finditer(r"\b" + MARK + r"\b", masked):
        k0 = m.start()
        src[k0:m.end()] = " " * (m.end() - k0)
        # what precedes: `template <...>`, `template [[host_name(..)]]`, or `[[host_name(..)]]`
        prev_end = max(masked.rfind(";", 0, k0), masked.rfind("}", 0, k0), masked.rfind("{", 0, k0))
        head = masked[prev_end + 1:k0]
        host = None
        hm = None
        for hm in _HOST_NAME.finditer(pre, prev_end + 1, k0):
            host = _string_value(hm.group(1))
            src[hm.start():hm.end()] = " " * (hm.end() - hm.start())
        explicit = re.match(r"\s*template\s*(\[\[.*\]\])?\s*$", head, re.S) is not None
        # after the mark: return type, name, optional <targs>, then ( params ) or ;
        rest = re.compile(r"\s*([A-Za-z_]\w*)\s+([A-Za-z_]\w*)\s*").match(masked, m.end())
        if not rest:
            raise MslError(f"{path}: cannot parse the kernel declaration at offset {k0}")
        name = rest.group(2)
        j = rest.end()
        targs = None
        if masked[j] == "<":
            e = _match(masked, j, "<", ">")
            targs = " ".join(pre[j + 1:e - 1].split())
            j = e
            while masked[j].isspace():
                j += 1
        if explicit:
            if host is None:
                raise MslError(f"{path}: explicit kernel instantiation of {name} without [[host_name]]")
            insts.append((host, name, targs))
            continue
        if masked[j] != "(":
            raise MslError(f"{path}: expected a parameter list after kernel {name}")
        e = _match(masked, j, "(", ")")
        params = _implicit_buffer_indices(_parse_params(pre, masked, j + 1, e - 1))
        is_template = re.search(r"\btemplate\s*<", head) is not None
        file, line = lines.locate(k0)
        kernels[name] = Kernel(name, is_template, params, k0, host, f"{file}:{line}")
        mt = re.search(r"\[\[\s*max_total_threads_per_threadgroup\s*\(([\d\s*+()uU]+)\)\s*\]\]", head)
        # a constant expression of integer literals (macros expanded: e.g. 4u * 32u)
        kernels[name].max_threads = (eval(re.sub(r"(\d+)[uU]", r"\1", mt.group(1)), {"__builtins__": {}})
                                     if mt else None)
        b = masked.find("{", e)
        if b >= 0 and not masked[e:b].strip(" \t\n;"):
            body_end = _match(masked, b, "{", "}")
            for tm in _TG_DECL.finditer(masked, b, body_end):
                rewrites.append((tm.start(), tm.end(), _threadgroup_storage(pre, tm, len(rewrites))))
                kernels[name].threadgroup_vars.append(tm.group("name"))
    entries = []
    for name, k in kernels.items():
        if not k.template:
            entries.append(Entry(k.host_name or name, name, None, k))
    for host, name, targs in insts:
        if name not in kernels:
            raise MslError(f"{path}: host_name {host!r} instantiates {name}, whose definition was not found")
        entries.append(Entry(host, name, targs, kernels[name]))
    seen = set()
    for e in entries:
        if e.host_name in seen:
            raise MslError(f"{path}: duplicate host name {e.host_name!r}")
        seen.add(e.host_name)
    for fm in _FUNCTION_CONSTANT.finditer(masked):
        rewrites.append((fm.start(), fm.end(), _function_constant(pre, fm, function_constants or {})))
    for a, b, text in sorted(rewrites, reverse=True):
        src[a:b] = list(text)
    return Prepared(Path(path), pre, "".join(src), kernels, entries, lines)


# Kernel-scope `threadgroup T x[N];` (threadgroup expands to __local). clang allows __local variables only
# in OpenCL __kernel functions, so each becomes a reference to per-group storage from the scheduler
# (guard pages, poisoned at each group start), on the same line.
_TG_DECL = re.compile(r"\b__local\s+(?P<type>[A-Za-z_][\w:<>,\s]*?)\s+(?P<name>[A-Za-z_]\w*)\s*"
                      r"(?P<dims>(?:\[[^\[\];{}]*\]\s*)*)(?:\[\[[^;]*?\]\]\s*)?;")


# `constant T name [[function_constant(n)]];` becomes a constant with the value compile() was given
# (is_function_constant_defined(name) is true) or T(0) (false), on the same line.
_FUNCTION_CONSTANT = re.compile(r"\b__constant\s+(?P<type>[A-Za-z_][\w:<>,\s]*?)\s+(?P<name>[A-Za-z_]\w*)\s*"
                                r"\[\[\s*function_constant\s*\((?P<index>[\d\s+*()-]+)\)\s*\]\]\s*;")


def _function_constant(pre: str, m: re.Match, values: dict) -> str:
    typ, name = " ".join(m.group("type").split()), m.group("name")
    index = eval(m.group("index"), {"__builtins__": {}})  # digits, + - * ( ) only (the regex): e.g. 600 + 1
    value = values.get(index)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = float.hex(value) + "f"
    else:
        text = "0" if value is None else str(int(value))
    newlines = "\n" * pre.count("\n", m.start(), m.end())
    return (f"__constant {typ} {name} = ({typ})({text}); "
            f"__constant bool msl_fc_defined_{name} = {'false' if value is None else 'true'};{newlines}")


def _threadgroup_storage(pre: str, m: re.Match, ident: int) -> str:
    typ = " ".join(pre[m.start("type"):m.end("type")].split())
    name = m.group("name")
    dims = " ".join(pre[m.start("dims"):m.end("dims")].split())
    newlines = "\n" * pre.count("\n", m.start(), m.end())
    alloc = f'msl_tg_alloc({ident}, sizeof({typ}{dims}), alignof({typ}), "{name}", __FILE__, __LINE__)'
    if dims:
        return f"__local {typ} (&{name}){dims} = *(__local {typ} (*){dims}) {alloc};{newlines}"
    return f"__local {typ} &{name} = *(__local {typ} *) {alloc};{newlines}"


def prepare(path, include_dirs=(), defines=(), source: str | None = None, function_constants=None) -> Prepared:
    return parse(path, preprocess(path, include_dirs, defines, source), function_constants)


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------

_LAUNCH_PRELUDE = r"""
// ---- generated by harness.msl_harness ----
#pragma OPENCL EXTENSION __cl_clang_function_pointers : enable
namespace msl_harness {
template <typename F> struct fn;
template <typename R, typename... A> struct fn<R(A...)> {
    template <int I> using arg = __type_pack_element<I, A...>;
};
#if MSL_HARNESS_FTZ
// MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6) for the duration of one launch.
struct ftz_scope {
    uint saved;
    ftz_scope() {
        __asm__ volatile("stmxcsr %0" : "=m"(saved));
        uint on = saved | 0x8040u;
        __asm__ volatile("ldmxcsr %0" : : "m"(on));
    }
    ~ftz_scope() { __asm__ volatile("ldmxcsr %0" : : "m"(saved)); }
};
#else
struct ftz_scope {};
#endif
template <typename P> struct bind { static P get(ulong a) { return reinterpret_cast<P>(a); } };
template <typename T> struct bind<T &> { static T &get(ulong a) { return *reinterpret_cast<T *>(a); } };
template <typename P> struct pos { static P get(metal::uint3 v) { return P(v.x); } };
template <typename E, int N> struct pos<E __attribute__((ext_vector_type(N)))> {
    static metal::vec<E, N> get(metal::uint3 v) {
        metal::vec<E, N> r;
        for (int i = 0; i < N; ++i) r[i] = E(v[i]);
        return r;
    }
};
}  // namespace msl_harness
"""

# attribute -> (expression, is a vector position)
_POSITIONS = {
    "thread_position_in_grid": ("gpos", True),
    "threadgroup_position_in_grid": ("tg", True),
    "thread_position_in_threadgroup": ("tt", True),
    "threads_per_threadgroup": ("tsz", True),
    "dispatch_threads_per_threadgroup": ("tdecl", True),
    "threadgroups_per_grid": ("ngroups", True),
    "threads_per_grid": ("grid", True),
    "thread_index_in_threadgroup": ("tidx", False),
    "thread_index_in_simdgroup": (f"tidx % {SIMD_WIDTH}", False),
    "simdgroup_index_in_threadgroup": (f"tidx / {SIMD_WIDTH}", False),
    "threads_per_simdgroup": (str(SIMD_WIDTH), False),
    "thread_execution_width": (str(SIMD_WIDTH), False),
    "simdgroups_per_threadgroup": (f"(tcount + {SIMD_WIDTH - 1}) / {SIMD_WIDTH}", False),
    "dispatch_simdgroups_per_threadgroup": (f"(tdecl.x * tdecl.y * tdecl.z + {SIMD_WIDTH - 1}) / {SIMD_WIDTH}",
                                            False),
    "thread_index_in_quadgroup": ("tidx % 4", False),
    "quadgroup_index_in_threadgroup": ("tidx / 4", False),
    "quadgroups_per_threadgroup": ("(tcount + 3) / 4", False),
}


def _launcher(k: int, e: Entry) -> str:
    """The per-thread function (kernel arguments from the thread's position) and the launch entry point,
    which hands it to the scheduler (runtime/scheduler.c)."""
    fn = e.function + (f"<{e.targs}>" if e.targs else "")
    args = []
    for i, p in enumerate(e.kernel.params):
        ptype = f"msl_harness::fn<F{k}>::arg<{i}>" if e.targs else p.type_text
        if p.attr == "buffer":
            args.append(f"msl_harness::bind<{ptype}>::get(bufs[{p.attr_arg}])")
        elif p.attr == "threadgroup":
            args.append(f"({ptype}) msl_tg_param({p.attr_arg})")
        elif p.attr in _POSITIONS:
            expr, is_vec = _POSITIONS[p.attr]
            args.append(f"msl_harness::pos<{ptype}>::get({expr})" if is_vec else f"({ptype})({expr})")
        else:
            raise MslError(f"{e.host_name}: parameter {p.text!r} has attribute {p.attr!r}, which the harness "
                           "cannot provide (textures, samplers, ... are not emulated)")
    typedef = f"typedef decltype({fn}) F{k};\n" if e.targs else ""
    return f"""{typedef}static inline __attribute__((always_inline)) void msl_body_{k}(
        const ulong *bufs, metal::uint3 ngroups, metal::uint3 tdecl, metal::uint3 grid, metal::uint3 tg,
        metal::uint3 tt, metal::uint3 tsz, uint tidx, uint tcount) {{
    const metal::uint3 gpos = tg * tdecl + tt;
    (void)bufs; (void)ngroups; (void)grid; (void)tsz; (void)tidx; (void)tcount; (void)gpos;
    {fn}({", ".join(args)});
}}
// one thread (fibers)
static void msl_thread_{k}(const msl_dispatch *d, const msl_pos *p) {{
    const metal::uint3 ngroups = {{d->ngroups[0], d->ngroups[1], d->ngroups[2]}};
    const metal::uint3 tdecl = {{d->tdecl[0], d->tdecl[1], d->tdecl[2]}};
    const metal::uint3 grid = {{d->grid[0], d->grid[1], d->grid[2]}};
    const metal::uint3 tg = {{p->tg[0], p->tg[1], p->tg[2]}};
    const metal::uint3 tt = {{p->tt[0], p->tt[1], p->tt[2]}};
    const metal::uint3 tsz = {{p->tsz[0], p->tsz[1], p->tsz[2]}};
    msl_body_{k}((const ulong *)d->bufs, ngroups, tdecl, grid, tg, tt, tsz, p->tidx, p->tcount);
}}
// every thread of the grid in turn (serial mode): the launch parameters in locals, the kernel inlined
static void msl_serial_{k}(const msl_dispatch *d) {{
    const ulong *bufs = (const ulong *)d->bufs;
    const metal::uint3 ngroups = {{d->ngroups[0], d->ngroups[1], d->ngroups[2]}};
    const metal::uint3 tdecl = {{d->tdecl[0], d->tdecl[1], d->tdecl[2]}};
    const metal::uint3 grid = {{d->grid[0], d->grid[1], d->grid[2]}};
    for (uint gz = 0; gz < ngroups.z; ++gz)
    for (uint gy = 0; gy < ngroups.y; ++gy)
    for (uint gx = 0; gx < ngroups.x; ++gx) {{
        const metal::uint3 tg = {{gx, gy, gz}};
        metal::uint3 tsz;
        for (int i = 0; i < 3; ++i) {{
            const uint left = grid[i] - tg[i] * tdecl[i];
            tsz[i] = left < tdecl[i] ? left : tdecl[i];
        }}
        const uint tcount = tsz.x * tsz.y * tsz.z;
        for (uint tz = 0; tz < tsz.z; ++tz)
        for (uint ty = 0; ty < tsz.y; ++ty)
        for (uint tx = 0; tx < tsz.x; ++tx) {{
            const metal::uint3 tt = {{tx, ty, tz}};
            msl_body_{k}(bufs, ngroups, tdecl, grid, tg, tt, tsz, tx + tsz.x * (ty + tsz.y * tz), tcount);
        }}
    }}
}}
extern "C" int msl_launch_{k}(msl_dispatch *d) {{
    d->per_thread = &msl_thread_{k};
    d->serial = &msl_serial_{k};
    const msl_harness::ftz_scope ftz;
    (void)ftz;
    return msl_run(d);
}}
"""


def generate(prep: Prepared) -> str:
    """The compilable translation unit: the rewritten source plus one launcher per host name."""
    parts = [prep.source, f'#line 1 "{LAUNCHER_FILE}"', _LAUNCH_PRELUDE]  # not the .metal file's lines
    for k, e in enumerate(prep.entries):
        parts.append(_launcher(k, e))
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------

def _inputs_digest(path: Path, flags: list[str]) -> str:
    h = hashlib.sha256()
    h.update(HARNESS_VERSION.encode() + Path(__file__).read_bytes() + _clang_version().encode())
    for module in (scheduler.SOURCE, scheduler.TRACE_SOURCE, Path(scheduler.__file__), Path(instrument.__file__),
                   Path(tracing.__file__)):
        h.update(module.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(str(path.resolve()).encode() + b"\0")  # the build names the file in #line and error messages
    deps = [path] + sorted(path.parent.glob("*.h")) + sorted(p for p in SHIM.rglob("*") if p.is_file())
    for p in deps:
        h.update(str(p.name).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:20]


def _run(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise MslError(f"{what} failed ({' '.join(cmd)}):\n{proc.stderr}")
    return proc


def build(path, ubsan: bool = False, extra_flags=(), *, ftz: bool = False, defines=(), function_constants=None,
          race_check: bool = True, trace: bool = False) -> tuple[Path, dict]:
    """Compile (or reuse from the cache) one .metal file; returns (shared library, manifest).
    ``defines`` are ``NAME`` or ``NAME=VALUE`` strings passed as ``-D``; ``function_constants`` maps
    ``[[function_constant(n)]]`` indices to values; ``race_check=False`` skips the threadgroup access
    checks (harness/instrument.py); ``trace=True`` builds for traced launches instead (harness/trace.py:
    memory accesses and basic blocks counted, no race check)."""
    path = Path(path).resolve()
    defines = list(defines)
    function_constants = dict(function_constants or {})
    flags = [*OCL_FLAGS, *COMMON_FLAGS, *DEBUG_FLAGS, *(UBSAN_FLAGS if ubsan else []),
             *(FTZ_FLAGS if ftz else []), *(TRACE_FLAGS if trace else []), *[f"-D{d}" for d in defines],
             *extra_flags]
    race_check = race_check and not trace
    digest = _inputs_digest(path, flags + [f"fc:{sorted(function_constants.items())}", f"race_check:{race_check}"])
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"{path.stem}{'-ubsan' if ubsan else ''}{'-ftz' if ftz else ''}{'-trace' if trace else ''}-{digest}"
    so, manifest_path = stem.with_suffix(".so"), stem.with_suffix(".json")
    if so.exists() and manifest_path.exists():
        return so, json.loads(manifest_path.read_text())
    prep = prepare(path, defines=defines, function_constants=function_constants)
    gen = stem.with_suffix(".gen.cpp")
    gen.write_text(generate(prep))
    tmp = f"{stem}.{os.getpid()}"
    sites: list[str] = []
    trace_info = None
    if trace:
        ir = _run([CLANG, *flags, *IR_FLAGS, f"-I{SHIM}", "-S", "-emit-llvm", str(gen), "-o", "-"],
                  f"compiling {path}").stdout
        traced, trace_info = tracing.instrument(ir, LAUNCHER_FILE)
        Path(tmp + ".ll").write_text(traced)
        _run([CLANG, "-x", "ir", "-O2", "-Xclang", "-disable-llvm-optzns", "-fPIC", "-c", tmp + ".ll", "-o", tmp + ".o"],
             f"compiling {path} (traced IR)")
        os.unlink(tmp + ".ll")
    elif race_check and re.search(r"\b__local\b", mask(prep.source)):
        # optimised IR with threadgroup as address space 3, its threadgroup accesses checked, then machine code
        ir = _run([CLANG, *flags, *IR_FLAGS, f"-I{SHIM}", "-S", "-emit-llvm", str(gen), "-o", "-"],
                  f"compiling {path}").stdout
        checked, sites = instrument.instrument(ir)
        Path(tmp + ".ll").write_text(checked)
        _run([CLANG, "-x", "ir", "-O2", "-Xclang", "-disable-llvm-optzns", "-fPIC", *(UBSAN_FLAGS if ubsan else []),
              "-c", tmp + ".ll", "-o", tmp + ".o"], f"compiling {path} (checked IR)")
        os.unlink(tmp + ".ll")
    else:  # no threadgroup memory: nothing to check
        _run([CLANG, *flags, f"-I{SHIM}", "-c", str(gen), "-o", tmp + ".o"], f"compiling {path}")
    rt = compiler_rt_builtins()
    san = [*UBSAN_FLAGS, "-shared-libsan", f"-Wl,-rpath,{Path(rt).parent}"] if ubsan else []
    runtime = scheduler.runtime_object(CLANG, CACHE, tuple(DEBUG_FLAGS))
    _run([CLANG, "-shared", "-fPIC", *san, tmp + ".o", str(runtime), "-o", tmp + ".so",
          rt, "-lm", "-ldl"], f"linking {path}")
    os.unlink(tmp + ".o")
    manifest = {
        "source": str(path),
        "sites": sites,
        "trace": trace_info,
        "entries": [
            {"host_name": e.host_name, "symbol": f"msl_launch_{k}", "function": e.function, "targs": e.targs,
             "location": e.kernel.location, "threadgroup_vars": e.kernel.threadgroup_vars,
             "max_threads": e.kernel.max_threads,
             "params": [dataclasses.asdict(p) | {"writable": p.writable, "type": p.type_text}
                        for p in e.kernel.params]}
            for k, e in enumerate(prep.entries)],
    }
    Path(tmp + ".json").write_text(json.dumps(manifest, indent=1))
    os.replace(tmp + ".so", so)
    os.replace(tmp + ".json", manifest_path)
    return so, manifest


# ----------------------------------------------------------------------------------------------------
# Guarded buffers
# ----------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = mmap.PAGESIZE
CANARY = 0xA5


class GuardedBuffer:
    """``nbytes`` of memory flush against a PROT_NONE page (after it by default, or before it with
    ``flush="start"``); the other side has a guard page too, with the alignment gap filled with a canary
    that is checked after the run."""

    def __init__(self, nbytes: int, align: int = 16, flush: str = "end"):
        self.nbytes = nbytes
        self.region = -(-max(nbytes, 1) // PAGE) * PAGE
        self.total = self.region + 2 * PAGE
        base = _libc.mmap(None, self.total, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.base = base
        for guard in (base, base + PAGE + self.region):
            if _libc.mprotect(guard, PAGE, 0):  # PROT_NONE
                raise OSError(ctypes.get_errno(), "mprotect failed")
        lo, hi = base + PAGE, base + PAGE + self.region
        self.addr = lo if flush == "start" else (hi - nbytes) & ~(align - 1)
        self._lo, self._hi = lo, hi
        self.view()[:] = CANARY

    def view(self) -> np.ndarray:
        """The whole accessible region (gap + data + slack) as uint8."""
        return np.ctypeslib.as_array((ctypes.c_ubyte * self.region).from_address(self._lo))

    def data(self) -> np.ndarray:
        off = self.addr - self._lo
        return self.view()[off:off + self.nbytes]

    def canary_ok(self) -> bool:
        v = self.view()
        off = self.addr - self._lo
        return bool((v[:off] == CANARY).all() and (v[off + self.nbytes:] == CANARY).all())

    def free(self):
        if self.base:
            _libc.munmap(self.base, self.total)
            self.base = 0


@dataclasses.dataclass
class DispatchResult:
    buffers: list            # numpy arrays (copies of the buffers after the run), index = buffer index
    unwritten: dict          # buffer index -> number of output elements still all-poison
    poison: int
    trace: object = None     # harness.trace.Trace of a traced launch


def _as_bytes(obj) -> tuple[np.ndarray, int, object]:
    """(uint8 view of a contiguous copy, element size, the original object for write-back)."""
    try:
        import torch
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            return t.reshape(-1).view(torch.uint8).numpy().copy(), t.element_size(), obj
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, np.generic):
        return np.frombuffer(np.array(obj).tobytes(), np.uint8).copy(), obj.itemsize, None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(obj), np.uint8).copy(), 1, obj
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return a.reshape(-1).view(np.uint8).copy(), a.itemsize, obj
    raise TypeError(f"buffer must be a numpy array/scalar, bytes or a torch tensor, got {type(obj).__name__}")


def _write_back(orig, data: np.ndarray):
    try:
        import torch
        if isinstance(orig, torch.Tensor):
            if orig.is_contiguous() and orig.device.type == "cpu":
                orig.reshape(-1).view(torch.uint8).copy_(torch.from_numpy(data))
            return
    except ImportError:  # pragma: no cover
        pass
    if isinstance(orig, bytearray):
        orig[:] = data.tobytes()
    elif isinstance(orig, np.ndarray) and orig.flags.writeable and orig.flags.c_contiguous:
        orig.reshape(-1).view(np.uint8)[:] = data


def _dims3(x) -> tuple[int, int, int]:
    t = (x,) if isinstance(x, (int, np.integer)) else tuple(x)
    if not 1 <= len(t) <= 3:
        raise ValueError(f"sizes have 1 to 3 dimensions, got {x!r}")
    return tuple(int(v) for v in t) + (1,) * (3 - len(t))


class Library:
    """A compiled .metal file: ``entries`` maps host names to their manifest entries."""

    def __init__(self, so: Path, manifest: dict):
        self.path = so
        self.manifest = manifest
        self.lib = ctypes.CDLL(str(so))
        self.ubsan_log = None
        if "-ubsan-" in so.name:
            # Send UBSan reports to a file per process, so that each dispatch can raise them.
            log = CACHE / "ubsan-log"
            getattr(self.lib, "__sanitizer_set_report_path")(str(log).encode())
            self.ubsan_log = Path(f"{log}.{os.getpid()}")
        self.entries = {e["host_name"]: e for e in manifest["entries"]}
        self._synchronising: set[str] = set()  # kernels found to need the fiber scheduler

    def __contains__(self, name):
        return name in self.entries

    def dispatch_threads(self, name, buffers, threads, group, **kw) -> DispatchResult:
        """Metal ``dispatchThreads``: exactly ``threads`` threads, the last group may be partial."""
        grid, tg = _dims3(threads), _dims3(group)
        groups = tuple(-(-g // t) for g, t in zip(grid, tg))
        return self._launch(name, buffers, groups, tg, grid, **kw)

    def dispatch_threadgroups(self, name, buffers, groups, group, **kw) -> DispatchResult:
        """Metal ``dispatchThreadgroups``: whole groups."""
        g, tg = _dims3(groups), _dims3(group)
        return self._launch(name, buffers, g, tg, tuple(a * b for a, b in zip(g, tg)), **kw)

    def _launch(self, name, buffers, groups, tg, grid, *, poison: int = 0xFF, flush: str = "end",
                align: int = 16, max_threads_per_group: int | None = None, threadgroup_buffers=None,
                inout=(), fibers: bool | None = None, trace: bool = False, groups_traced=None,
                **sched) -> DispatchResult:
        """``max_threads_per_group``: the pipeline maximum (at most 1024); ``threadgroup_buffers``:
        ``{index: bytes}`` for ``[[threadgroup(index)]]`` parameters; ``inout``: indices of written buffers
        whose contents the kernel also reads (copied in, not poisoned; e.g. atomic accumulators); ``fibers``:
        None (default) runs serially until the kernel synchronises, True always on fibers, False serially
        only (a kernel that synchronises is an error);
        ``trace``: record the launch (a library compiled with ``trace=True``; runs on fibers): the result's
        ``trace`` is a harness.trace.Trace; ``groups_traced``: run only that many threadgroups, spread evenly
        over the grid (first and last included), or a list of linear group indices, and extrapolate;
        ``sched``: the scheduler's options (harness/scheduler.py): schedule, seed, simd_order, mma_order."""
        if name not in self.entries:
            raise MslError(f"no kernel with host name {name!r}; have {sorted(self.entries)}")
        entry = self.entries[name]
        label = f"kernel {name} ({entry.get('location', '?')})"
        limits = {"Metal's limit": MAX_THREADS_PER_GROUP, "the pipeline maximum": max_threads_per_group,
                  "the kernel's [[max_total_threads_per_threadgroup]]": entry.get("max_threads")}
        what, limit = min(((k, v) for k, v in limits.items() if v is not None), key=lambda kv: kv[1])
        count = tg[0] * tg[1] * tg[2]
        if any(t < 1 for t in tg):
            raise MslError(f"{label}: an empty threadgroup {tg[0]}x{tg[1]}x{tg[2]}")
        if count > limit:
            raise MslError(f"{label}: a threadgroup of {tg[0]}x{tg[1]}x{tg[2]} = {count} threads exceeds {what} of "
                           f"{limit} threads")
        tg_params = self._threadgroup_params(label, entry, threadgroup_buffers or {})
        writable = {p["attr_arg"] for p in entry["params"] if p["attr"] == "buffer" and p["writable"]} - set(inout)
        needed = {p["attr_arg"] for p in entry["params"] if p["attr"] == "buffer"}
        missing = [i for i in sorted(needed) if i >= len(buffers) or buffers[i] is None]
        if missing:
            raise MslError(f"{label}: buffers {missing} are not bound")
        if fibers is False and tg_params:
            raise MslError(f"{label}: fibers=False, but the kernel has [[threadgroup(n)]] parameters")
        info = self.manifest.get("trace")
        if trace and info is None:
            raise MslError(f"{label}: trace=True needs a library compiled with trace=True")
        if groups_traced is not None and not trace:
            raise MslError(f"{label}: groups_traced is for traced launches")
        total_groups = groups[0] * groups[1] * groups[2]
        group_list = (np.asarray(groups_traced, np.uint32) if isinstance(groups_traced, (list, tuple, np.ndarray))
                      else tracing.sample_groups(total_groups, groups_traced))
        if group_list is not None and (group_list.size == 0 or int(group_list.max()) >= total_groups
                                       or group_list.size > 65534):
            raise MslError(f"{label}: groups_traced selects groups outside the grid of {total_groups} (or none, or "
                           "more than 65534)")
        if fibers or tg_params or trace or (fibers is None and name in self._synchronising):
            mode = scheduler.MODE_FIBERS
        else:
            mode = scheduler.MODE_SERIAL if fibers is False else scheduler.MODE_AUTO
        converted = {i: _as_bytes(obj) for i, obj in enumerate(buffers) if obj is not None}
        while True:
            guards: dict[int, GuardedBuffer] = {}
            try:
                addrs = (ctypes.c_uint64 * max(len(buffers), 1))()
                for i, (data, _, _) in converted.items():
                    g = GuardedBuffer(data.size, align=align, flush=flush)
                    g.data()[:] = poison if i in writable else data
                    guards[i] = g
                    addrs[i] = g.addr
                d, err = scheduler.make_dispatch(groups, tg, grid, ctypes.addressof(addrs), poison=poison,
                                                 threadgroup_params=tg_params, **sched)
                d.mode = mode
                recorder = None
                if trace:
                    recorder = tracing.Recorder(info, int(entry["symbol"].rsplit("_", 1)[1]),
                                                {i: (g.addr, g.nbytes) for i, g in guards.items()})
                    d.trace = ctypes.addressof(recorder.t)
                if group_list is not None:
                    d.group_list, d.n_group_list = group_list.ctypes.data, group_list.size
                fn = getattr(self.lib, entry["symbol"])
                fn.argtypes = [ctypes.c_void_p]
                fn.restype = ctypes.c_int
                rc = fn(ctypes.byref(d)) if all(grid) else scheduler.OK
                if rc == scheduler.NEEDS_FIBERS:  # the kernel synchronises: rerun it on fibers
                    self._synchronising.add(name)
                    mode = scheduler.MODE_FIBERS
                    continue
                if self.ubsan_log is not None and self.ubsan_log.exists():
                    report = self.ubsan_log.read_text()
                    self.ubsan_log.unlink()
                    if report.strip():
                        raise MslError(f"{label}: undefined behaviour (UBSan):\n{report}")
                if rc != scheduler.OK:
                    message = _symbolize(err.value.decode(errors="replace"))
                    sites = self.manifest.get("sites", [])
                    message = re.sub(r"@site\((\d+)\)", lambda m: sites[int(m.group(1))], message)
                    raise MslError(f"{label}: {message}")
                out, unwritten = [None] * len(buffers), {}
                for i, g in guards.items():
                    if not g.canary_ok():
                        raise MslError(f"{label}: buffer {i} was written outside its bounds (alignment slack)")
                    data = g.data().copy()
                    itemsize, orig = converted[i][1:]
                    if i in writable:
                        elems = data[: data.size // itemsize * itemsize].reshape(-1, itemsize)
                        unwritten[i] = int((elems == poison).all(axis=1).sum())
                        _write_back(orig, data)
                    out[i] = data.view(buffers[i].dtype) if isinstance(buffers[i], np.ndarray) else data
                return DispatchResult(out, unwritten, poison,
                                      recorder.result(total_groups) if recorder is not None else None)
            finally:
                for g in guards.values():
                    g.free()

    @staticmethod
    def _threadgroup_params(label, entry, sizes: dict) -> dict:
        """``[[threadgroup(n)]]`` parameter sizes as Metal's setThreadgroupMemoryLength takes them."""
        wanted = sorted(p["attr_arg"] for p in entry["params"] if p["attr"] == "threadgroup")
        if sorted(sizes) != wanted:
            raise MslError(f"{label}: threadgroup_buffers binds indices {sorted(sizes)}, the kernel's "
                           f"[[threadgroup(n)]] parameters are {wanted}")
        for index, nbytes in sizes.items():
            if not 0 <= index < scheduler.MAX_TG_PARAMS or nbytes <= 0 or nbytes % 16:
                raise MslError(f"{label}: threadgroup buffer {index}: {nbytes} bytes (Metal needs a positive "
                               "multiple of 16)")
        return dict(sizes)


_PC = re.compile(r"\[pc (\S+)\+0x([0-9a-f]+)\]")


def _symbolize(message: str) -> str:
    """Replace ``[pc lib+0xoffset]`` (a fault in a kernel) by the source ``file:line`` (line tables)."""
    m = _PC.search(message)
    if not m:
        return message
    tool = shutil.which("llvm-symbolizer-19") or shutil.which("llvm-symbolizer")
    cmd = [tool, f"--obj={m.group(1)}"] if tool else ["addr2line", "-i", "-e", m.group(1)]  # binutils
    proc = subprocess.run([*cmd, f"0x{m.group(2)}"], capture_output=True, text=True)
    loc = re.search(r"^([^?\n]\S*?):(\d+)(?::\d+)?$", proc.stdout, re.M)  # the innermost (inlined) frame
    if not loc:
        return message
    file = LAUNCHER_FILE if loc.group(1).endswith(LAUNCHER_FILE) else loc.group(1)
    return f"{message[:m.start()]}at {file}:{loc.group(2)}{message[m.end():]}"


@functools.cache
def _compile_cached(path: str, ubsan: bool, ftz: bool, defines: tuple[str, ...], function_constants: tuple,
                    race_check: bool, trace: bool) -> Library:
    return Library(*build(path, ubsan=ubsan, ftz=ftz, defines=defines, function_constants=dict(function_constants),
                          race_check=race_check, trace=trace))


def compile(path, ubsan: bool = False, *, ftz: bool = False, defines=None, function_constants=None,  # noqa: A001
            race_check: bool = True, trace: bool = False) -> Library:
    """Build (cached on disk and per process) and load one .metal file. ``ubsan``: UBSan build whose
    reports raise MslError; ``ftz``: flush float denormals to zero as Metal fast math may (compile with
    ``-fdenormal-fp-math=preserve-sign``, MXCSR FTZ|DAZ during each launch); ``defines``: a mapping or
    an iterable of ``NAME``/``NAME=VALUE`` macro definitions; ``function_constants``: ``{index: value}``
    for ``[[function_constant(index)]]`` (as MTLFunctionConstantValues; missing ones are undefined);
    ``race_check``: check every threadgroup load/store for bounds and races (default; False is faster);
    ``trace``: a trace build (harness/trace.py) for ``dispatch_*(..., trace=True)``."""
    if isinstance(defines, dict):
        defines = [k if v is None else f"{k}={v}" for k, v in defines.items()]
    fcs = tuple(sorted((function_constants or {}).items()))
    return _compile_cached(str(Path(path).resolve()), ubsan, ftz, tuple(defines or ()), fcs, race_check, trace)


# ----------------------------------------------------------------------------------------------------
# Launches as data: one dispatch or a chain of them (harness/perf.py, harness/llama_metal.py)
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Launch:
    """One dispatch_threadgroups call of any kernel library, as data."""
    path: Path                    # the .metal file
    compile_kwargs: dict          # extra compile() kwargs: defines=, function_constants=, race_check=
    host_name: str
    buffers: list                 # numpy arrays / scalars as Library.dispatch_threadgroups takes them
    groups: tuple
    group: tuple
    threadgroup_buffers: dict = dataclasses.field(default_factory=dict)  # {index: bytes} for [[threadgroup(n)]]
    out_index: int | None = None  # the buffer holding the result
    feeds: dict = dataclasses.field(default_factory=dict)  # {buffer index: (earlier launch, its buffer index)}
    out_shape: tuple = ()         # the result's shape (llama_metal.run: ggml's, outermost first)
    inout: tuple = ()             # written buffers the kernel also reads (dispatch_threadgroups' inout)

    @property
    def threads_per_group(self) -> int:
        return int(np.prod(self.group))


def dispatch_all(launches: list[Launch], *, trace: bool = False, groups_traced=None) -> list[DispatchResult]:
    """Run the launches in order, feeding earlier results forward (``Launch.feeds``); every launch's result.
    ``trace``: trace builds and traced runs; ``groups_traced``: the last launch runs only that many threadgroups
    (sampled), the earlier ones run whole (their outputs feed the next)."""
    results = []
    for i, launch in enumerate(launches):
        buffers = list(launch.buffers)
        for index, (source, source_index) in launch.feeds.items():
            buffers[index] = results[source].buffers[source_index]
        lib = compile(launch.path, trace=trace, **launch.compile_kwargs)
        results.append(lib.dispatch_threadgroups(launch.host_name, buffers, launch.groups, launch.group, trace=trace,
                                                 groups_traced=groups_traced if i == len(launches) - 1 else None,
                                                 threadgroup_buffers=launch.threadgroup_buffers, inout=launch.inout))
    return results


# ----------------------------------------------------------------------------------------------------
# Dequantization through the harness
# ----------------------------------------------------------------------------------------------------

def kernel_file(qtype) -> Path:
    from gguf_dequant.types import kernel_file_name

    return METAL / kernel_file_name(qtype)


def dequantize(qtype, raw_bytes, dtype=None, *, ubsan: bool = False, flush: str = "end", path=None,
               defines=None):
    """Run ``dequantize_<type>_{f32,f16,bf16}`` over exactly ``launch.grid(qtype, n)``; returns a flat
    torch tensor. Asserts that every output element was written. ``path`` overrides the kernel file
    (e.g. the run-time Metal path's single-source file); ``defines`` as for :func:`compile`."""
    import torch

    from gguf_dequant import launch
    from gguf_dequant.types import resolve

    dtype = torch.float32 if dtype is None else dtype
    t = resolve(qtype)
    suffix, np_dtype = {torch.float32: ("f32", np.float32), torch.float16: ("f16", np.float16),
                        torch.bfloat16: ("bf16", np.uint16)}[dtype]
    raw = raw_bytes.detach().cpu().numpy() if isinstance(raw_bytes, torch.Tensor) else raw_bytes
    src = np.frombuffer(bytes(raw) if not isinstance(raw, np.ndarray) else raw.tobytes(), np.uint8)
    if src.size % t.block_bytes:
        raise ValueError(f"{t.name}: {src.size} bytes is not a whole number of {t.block_bytes}-byte blocks")
    n = src.size // t.block_bytes * t.block_elems
    out = np.empty(n, np_dtype)
    if n:
        lib = compile(path or kernel_file(t), ubsan=ubsan, defines=defines)
        threads, group = launch.grid(t, n)
        name = f"dequantize_{t.name.lower()}_{suffix}"
        res = lib.dispatch_threads(name, [src, out, np.uint64(n)], threads, group, flush=flush)
        if res.unwritten.get(1):
            # All-ones can be a legitimate result (a NaN passed through); an element is unwritten only if
            # it still holds the poison under a second, different poison pattern too.
            first = res.buffers[1].view(np.uint8).reshape(n, -1)
            res2 = lib.dispatch_threads(name, [src, np.empty(n, np_dtype), np.uint64(n)], threads, group,
                                        poison=0x7F, flush=flush)
            second = res2.buffers[1].view(np.uint8).reshape(n, -1)
            both = ((first == 0xFF).all(axis=1) & (second == 0x7F).all(axis=1)).sum()
            assert both == 0, f"{name}: {int(both)} of {n} output elements were never written"
        out = res.buffers[1]
    result = torch.from_numpy(np.ascontiguousarray(out).copy())
    return result.view(torch.bfloat16) if dtype == torch.bfloat16 else result


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.msl_harness", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help=".metal files (default: metal/*.metal)")
    ap.add_argument("--ubsan", action="store_true", help="build with -fsanitize=undefined (trapping)")
    ap.add_argument("--run", action="store_true",
                    help="also dequantize random blocks of each file's types and compare with the reference")
    ap.add_argument("--blocks", type=int, default=300)
    ap.add_argument("--print-source", action="store_true", help="print the generated translation unit")
    args = ap.parse_args(argv)
    if not available():
        print(f"{CLANG} not found", file=sys.stderr)
        return 2
    files = args.files or sorted(METAL.glob("*.metal"))
    status = 0
    for f in files:
        try:
            if args.print_source:
                print(generate(prepare(f)))
            lib = compile(f, ubsan=args.ubsan)
        except MslError as e:
            print(f"FAIL {f}: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"ok   {f}: {', '.join(sorted(lib.entries))}")
        if args.run:
            status |= _run_check(f, lib, args)
    return status


def _run_check(f: Path, lib: Library, args) -> int:
    import torch

    from gguf_dequant import reference, testing
    from gguf_dequant.types import BY_NAME
    status = 0
    rng = np.random.default_rng(0)
    for t in BY_NAME.values():
        if kernel_file(t).resolve() != f.resolve():
            continue
        raw = testing.random_blocks(t, args.blocks, rng, finite=False).tobytes()
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            got = dequantize(t, raw, dtype, ubsan=args.ubsan)
            try:
                want = reference.dequantize(torch.frombuffer(bytearray(raw), dtype=torch.uint8), t, dtype)
                testing.assert_bits_equal(got, want, f"{t.name} -> {dtype}")
                print(f"     {t.name} -> {dtype}: bit-exact ({got.numel()} elements)")
            except ImportError:
                print(f"     {t.name} -> {dtype}: ran, no reference module yet")
            except AssertionError as e:
                print(f"     {e}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
