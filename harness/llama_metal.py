"""llama.cpp's own Metal kernels in the Linux harness: the yardstick for our kernels (issue 16, item 3).

The kernel sources come unmodified from the llama-cpp-python source distribution that ``tools/setup.sh``
unpacks (``.cache/ggml/src/llama_cpp_python-*/vendor/llama.cpp/ggml/src/ggml-metal/kernels``: ``mul_mv.metal``,
``mul_mm.metal``, ``quantize.metal`` with ``common.h``, ``dequantize.h``, ``quantize.h``, ``ggml-metal-impl.h`` and
``ggml-common.h``). :func:`prepare` copies them to ``.cache/llama-metal/<digest>/`` with the scripted edits in
:data:`EDITS` (each keeps the line count; :func:`edited_lines` lists every changed line) and the harness
compiles them through :func:`msl_harness.compile` only.

Each entry point below returns the launches llama.cpp's host code makes for the op on contiguous tensors
(``ggml-metal-ops.cpp`` ``ggml_metal_op_mul_mat`` / ``ggml_metal_op_mul_mat_id`` / ``ggml_metal_op_get_rows``;
pipelines, function constants, threadgroup memory and ``nr0``/``nsg`` from ``ggml-metal-device.cpp``
``ggml_metal_library_get_pipeline_*``; argument structs ``ggml_metal_kargs_*`` built from
``ggml-metal-impl.h``): ``w_raw`` is (N, bytes per row) uint8 GGUF blocks ((E, N, bytes per row) for experts),
``x`` is (M, K) float32. :func:`run` chains them and returns ggml's result (``msl_harness.dispatch_all``
runs the chain; harness/perf.py traces it).

    launches = mul_mv("q4_K", w_raw, x)
    y = run(launches)                 # (M, N) float32
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np

from . import msl_harness
from .msl_harness import Launch

ROOT = Path(__file__).resolve().parents[1]
SDIST_GLOB = "llama_cpp_python-*/vendor/llama.cpp"
PREPARED = ROOT / ".cache" / "llama-metal"
KERNEL_DIR = Path("ggml/src/ggml-metal/kernels")
HEADERS = (Path("ggml/src/ggml-common.h"), Path("ggml/src/ggml-metal/ggml-metal-impl.h"),
           KERNEL_DIR / "common.h", KERNEL_DIR / "dequantize.h", KERNEL_DIR / "quantize.h")
SOURCES = ("mul_mv.metal", "mul_mm.metal", "quantize.metal")

# ggml type name -> (ggml type id, elements per block, bytes per block)
TYPES = {
    "f16": (1, 1, 2),
    "q4_0": (2, 32, 18),
    "q8_0": (8, 32, 34),
    "q4_K": (12, 256, 144),
    "q5_K": (13, 256, 176),
    "q6_K": (14, 256, 210),
    "iq4_xs": (23, 256, 136),
    "mxfp4": (39, 32, 17),
    "iq2_xxs": (16, 256, 66),
    "iq2_xs": (17, 256, 74),
    "iq3_xxs": (18, 256, 98),
    "iq1_s": (19, 256, 50),
    "iq3_s": (21, 256, 110),
    "iq2_s": (22, 256, 82),
    "iq1_m": (29, 256, 56),
    # the other non-IQ-grid types llama.cpp's Metal mat-vec has (not TQ1_0, NVFP4)
    "q4_1": (3, 32, 20),
    "q5_0": (6, 32, 22),
    "q5_1": (7, 32, 24),
    "q2_K": (10, 256, 84),
    "q3_K": (11, 256, 110),
    "iq4_nl": (20, 32, 18),
    "tq2_0": (35, 256, 66),
    "q1_0": (41, 128, 18),
    "q2_0": (42, 64, 18),
}
# ggml-metal-ops.cpp ggml_metal_op_mul_mat: the small-batch kernel_mul_mv_ext types and their row ranges
EXT_ROWS = {"q4_0": (2, 8), "q8_0": (2, 8), "mxfp4": (2, 8),
            "q4_K": (4, 8), "q5_K": (4, 8), "q6_K": (4, 8)}
EXT_R1PTG = {2: 2, 3: 3, 4: 4, 5: 5, 6: 3, 7: 4, 8: 4}  # ne11 -> r1ptg
MAP0_NE20 = (1, 2, 4, 5, 6, 8, 10, 16, 22)  # kernel_mul_mm_id_map0_ne20_* instantiations
FC_MUL_MV, FC_MUL_MM = 600, 700  # ggml-metal-impl.h
# Kernels in which every simdgroup stores the same lookup table to the same threadgroup words before the
# barrier: a write-write race on identical values that the harness's race check reports; they run without it.
IDENTICAL_VALUE_RACES = {f"kernel_mul_mv{id_}_{t}_f32" for id_ in ("", "_id") for t in ("iq4_xs", "mxfp4", "iq4_nl")}
MAX_THREADS = 1024  # the pipelines' maxTotalThreadsPerThreadgroup assumed for get_rows' nth (Apple GPUs: 1024)


def _mv_geometry(t: str, k: int) -> tuple[int, int, int]:
    """(nsg, nr0, threadgroup memory bytes) of ggml_metal_library_get_pipeline_mul_mv (N_SG_*, N_R0_* of
    ggml-metal-impl.h)."""
    table = {"q4_0": (2, 4, 0), "q8_0": (4, 2, 32 * 4 * 2), "mxfp4": (2, 2, 32 * 4), "q4_K": (2, 2, 0),
             "q5_K": (2, 1, 0), "q6_K": (2, 2, 0), "iq4_xs": (2, 2, 32 * 4)}
    table |= {"q4_1": (2, 4, 0), "q5_0": (2, 4, 0), "q5_1": (2, 4, 0), "q2_K": (2, 4, 0), "q3_K": (2, 2, 0),
              "iq4_nl": (2, 2, 32 * 4), "tq2_0": (2, 4, 0), "q1_0": (2, 8, 0), "q2_0": (2, 8, 0)}
    # the IQ grid types: N_SG 2, N_R0 4, their grids (and sign table) staged in threadgroup memory
    iq_smem = {"iq2_xxs": 256 * 8 + 128, "iq2_xs": 512 * 8 + 128, "iq3_xxs": 256 * 4 + 128, "iq3_s": 512 * 4,
               "iq2_s": 0, "iq1_s": 0, "iq1_m": 0}
    if t == "f16":
        return (1, 32, 0) if k < 32 else (min(4, (k + 127) // 128), 2, 32 * 4 * 2)
    if t in iq_smem:
        if k // 32 < 32 and 32 % (k // 32) == 0:
            raise ValueError(f"{t}: K = {k} takes llama.cpp's split variant (N_R0 8, rows split across lanes), "
                             "which the yardstick does not launch; use K >= 1024")
        return 2, 4, iq_smem[t]
    return table[t]


def _mv_compile_kwargs(host: str, nsg: int) -> dict:
    """Function constants of ggml_metal_library_get_pipeline_mul_mv(_id): nsg, ne12 = r2 = r3 = 1, no split."""
    fcs = {FC_MUL_MV + 0: nsg, FC_MUL_MV + 2: 1, FC_MUL_MV + 3: 1, FC_MUL_MV + 4: 1, FC_MUL_MV + 5: False}
    return {"function_constants": fcs} | ({"race_check": False} if host in IDENTICAL_VALUE_RACES else {})


@functools.cache
def launched_host_names() -> frozenset[str]:
    """Every templated host name the entry points below can launch: the instantiations prepare() keeps."""
    names = {f"kernel_mul_mv_f16_f32{s}" for s in ("", "_4", "_short")}
    for t in EXT_ROWS:
        names |= {f"kernel_mul_mv_ext_{t}_f32_r1_{r}" for r in set(EXT_R1PTG.values())}
    for t in TYPES:
        names |= {f"kernel_mul_mm_{t}_f32", f"kernel_mul_mm_id_{t}_f32", f"kernel_get_rows_{t}",
                  f"kernel_mul_mv_id_{t}_f32" + ("_4" if t == "f16" else "")}
    names |= {f"kernel_mul_mm_id_map0_ne20_{u}" for u in MAP0_NE20}
    return frozenset(names)


# ---- the scripted edits ----------------------------------------------------------------------------

_INSTANTIATION = re.compile(r'^template\s*\[\[\s*host_name\(\s*"(\w+)"\s*\)\s*\]\]\s*kernel\b[^;]*;\s*$')
_FN_POINTER_PARAM = re.compile(r"\bvoid\s*\(\s*\*\s*(\w+)\s*\)\s*\(")
_FN_TYPED_PARAM = re.compile(r"\btemplate\s*<\s*(\w+_t)\s+(disp_fn)\s*>")  # typedef'd function types
_CONSTANT_PARAM = re.compile(r"(?<=[(,])(\s*)constant\s+(?!const\b)(\w+)(\s*\*\s*\w+\s*)(?=[,)])")
_VEC_DECL = re.compile(r"^\s*(?:const\s+)?(?:float|half|int|uint|short|ushort|char|uchar)([234])\s+\w+\s*=")
_SHORT_BRACE = re.compile(r"=\s*\{\s*([^,{}]+?)\s*\}")


def _drop_instantiations(line: str) -> str:
    m = _INSTANTIATION.match(line)
    return "" if m and m.group(1) not in launched_host_names() else line


def _function_reference_params(line: str) -> str:
    line = _FN_POINTER_PARAM.sub(r"void (&\1)(", line)  # the sources have them only as template parameters
    return _FN_TYPED_PARAM.sub(r"template<\1 &\2>", line)


def _const_constant_params(line: str) -> str:
    return _CONSTANT_PARAM.sub(r"\1constant const \2\3", line)


def _pad_vector_braces(line: str) -> str:
    m = _VEC_DECL.match(line)
    if not m:
        return line
    n = int(m.group(1))
    return _SHORT_BRACE.sub(lambda b: "= {" + ", ".join([b.group(1)] + ["0"] * (n - 1)) + "}", line)


# (name, why, per-line function); applied in this order to every line of every source and header.
EDITS = [
    ("drop-instantiations",
     "explicit instantiations (`template [[host_name(\"...\")]] kernel ...;`, one line each) of kernels no "
     "entry point here launches are blanked, so a compile builds only what can be launched",
     _drop_instantiations),
    ("function-reference-params",
     "`void (*f)(...)` template parameters become `void (&f)(...)` (and `template<fn_type_t disp_fn>`, a "
     "function type adjusted to a pointer, `template<fn_type_t &disp_fn>`): clang's C++ for OpenCL rejects a "
     "function as a pointer template argument (Apple's compiler accepts it); every use is a call, which is the same",
     _function_reference_params),
    ("const-constant-params",
     "a `constant T *` parameter becomes `constant const T *`: Metal's constant address space is read-only, so "
     "Apple's compiler passes the const tables (kvalues_iq4nl_f) to it; clang's C++ for OpenCL wants the const",
     _const_constant_params),
    ("pad-vector-braces",
     "`float4 v = {0.f};` becomes `float4 v = {0.f, 0, 0, 0};`: Metal zero-fills the missing elements as "
     "C++ aggregates do, clang's OpenCL mode rejects a vector initialiser with fewer elements",
     _pad_vector_braces),
]


def llama_cpp_dir() -> Path | None:
    """The vendored llama.cpp of the unpacked llama-cpp-python source distribution, or None."""
    for d in sorted((ROOT / ".cache" / "ggml" / "src").glob(SDIST_GLOB)):
        if (d / KERNEL_DIR / "mul_mv.metal").is_file():
            return d
    return None


def why_unavailable() -> str | None:
    if not msl_harness.available():
        return f"{msl_harness.CLANG} is not installed"
    if llama_cpp_dir() is None:
        return (f"llama.cpp's Metal sources are not unpacked under .cache/ggml/src/{SDIST_GLOB} "
                "(bash tools/build_ggml.sh)")
    return None


def _inputs(src: Path) -> list[tuple[Path, Path]]:
    """(original, name in the prepared directory) of every file prepare() writes."""
    return [(src / h, Path(h.name)) for h in HEADERS] + [(src / KERNEL_DIR / s, Path(s)) for s in SOURCES]


def edit_text(text: str) -> str:
    out = []
    for line in text.split("\n"):
        for _, _, fn in EDITS:
            line = fn(line)
        out.append(line)
    return "\n".join(out)


@functools.cache
def prepare() -> Path:
    """The directory of edited copies, named by the hash of their contents (so the harness's compile cache
    survives changes to this module that leave the edited text alone)."""
    src = llama_cpp_dir()
    if src is None:
        raise FileNotFoundError(why_unavailable())
    edited = {name: edit_text(orig.read_text()) for orig, name in _inputs(src)}
    h = hashlib.sha256()
    for name, text in sorted(edited.items()):
        h.update(f"{name}\0{text}\0".encode())
    out = PREPARED / h.hexdigest()[:16]
    if not out.is_dir():
        tmp = out.with_name(f"{out.name}.{os.getpid()}")  # other processes may prepare the same directory
        tmp.mkdir(parents=True)
        for name, text in edited.items():
            (tmp / name).write_text(text)
        try:
            tmp.rename(out)
        except OSError:  # another process got there first; its copy is the same
            shutil.rmtree(tmp)
    return out


def edited_lines() -> list[tuple[str, int, str, str]]:
    """(file, line number, original, edited) for every line prepare() changed."""
    src, out = llama_cpp_dir(), prepare()
    changes = []
    for orig, name in _inputs(src):
        a, b = orig.read_text().split("\n"), (out / name).read_text().split("\n")
        assert len(a) == len(b), f"{name}: the edits changed the line count"
        changes += [(str(name), i + 1, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return changes


# ---- argument structs (ggml-metal-impl.h) ------------------------------------------------------------

_C_TYPES = {"int16_t": "<i2", "uint16_t": "<u2", "int32_t": "<i4", "uint32_t": "<u4", "int64_t": "<i8",
            "uint64_t": "<u8", "float": "<f4", "bool": "?"}


@functools.cache
def kargs_dtype(name: str) -> np.dtype:
    """numpy dtype with the C layout of ``typedef struct { ... } <name>;`` in ggml-metal-impl.h."""
    text = (prepare() / "ggml-metal-impl.h").read_text()
    m = re.search(r"typedef\s+struct\s*\{([^{}]*)\}\s*" + re.escape(name) + r"\s*;", text)
    if not m:
        raise KeyError(f"{name} is not defined in ggml-metal-impl.h")
    names, formats = [], []
    for decl in re.sub(r"//[^\n]*", "", m.group(1)).split(";"):
        if not decl.strip():
            continue
        ctype, *fields = decl.replace(",", " ").split()
        for f in fields:
            names.append(f)
            formats.append(_C_TYPES[ctype])
    return np.dtype({"names": names, "formats": formats}, align=True)


def kargs(name: str, **values) -> np.ndarray:
    """One ``name`` struct (a 1-element structured array) with every field set."""
    dt = kargs_dtype(name)
    missing = set(dt.names) - set(values)
    extra = set(values) - set(dt.names)
    if missing or extra:
        raise ValueError(f"{name}: missing fields {sorted(missing)}, unknown fields {sorted(extra)}")
    a = np.zeros(1, dt)
    for k, v in values.items():
        a[k] = v
    return a


# ---- launches ----------------------------------------------------------------------------------------

@functools.cache
def _threadgroup_params(path: Path, host_name: str) -> tuple[int, ...]:
    """The [[threadgroup(n)]] indices of a kernel (from the preprocessed source, no compile)."""
    prep = msl_harness.prepare(path)
    for e in prep.entries:
        if e.host_name == host_name:
            return tuple(sorted(p.attr_arg for p in e.kernel.params if p.attr == "threadgroup"))
    raise KeyError(f"{path.name} has no kernel {host_name!r} (is it in launched_host_names()?)")


def _threadgroup_buffers(path: Path, host_name: str, smem: int) -> dict:
    """llama.cpp sets threadgroup memory length ``smem`` at index 0 whatever the kernel declares; the harness
    binds only declared parameters and needs a positive size (a kernel given 0 bytes never touches it)."""
    return {i: max(smem, 16) for i in _threadgroup_params(path, host_name)}


def _type(qtype: str) -> tuple[str, int, int, int]:
    key = {k.lower(): k for k in TYPES}.get(str(qtype).lower())
    if key is None:
        raise ValueError(f"type {qtype!r}: the yardstick launches {sorted(TYPES)}")
    return (key, *TYPES[key])


def _weights(qtype: str, w_raw: np.ndarray, k: int, ndim: int = 2) -> tuple[str, int, np.ndarray]:
    t, _, qk, ts = _type(qtype)
    w = np.ascontiguousarray(w_raw)
    if w.dtype != np.uint8 or w.ndim != ndim:
        raise ValueError(f"w_raw must be {ndim}-D uint8 GGUF blocks, got {w.dtype} with shape {w.shape}")
    if k % qk or w.shape[-1] != k // qk * ts:
        raise ValueError(f"{t}: K = {k} needs rows of {k // qk * ts if k % qk == 0 else '?'} bytes "
                         f"(K a multiple of {qk}), w_raw has {w.shape[-1]}")
    return t, ts, w


def _activations(x: np.ndarray, ndim=(2,)) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim not in ndim:
        raise ValueError(f"x must be float32 with {' or '.join(map(str, ndim))} dimensions, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)


def mul_mv(qtype: str, w_raw: np.ndarray, x: np.ndarray) -> list[Launch]:
    """``kernel_mul_mv_<t>_f32`` (f16: ``kernel_mul_mv_f16_f32_4``): one src1 row per threadgroup row, so M
    rows are M grid rows (what llama.cpp runs when neither the ext nor the mm kernel applies)."""
    x = _activations(x)
    m, k = x.shape
    t, ts, w = _weights(qtype, w_raw, k)
    n = w.shape[0]
    nsg, nr0, smem = _mv_geometry(t, k)
    suffix = ("_short" if k < 32 else "_4" if k % 4 == 0 else "") if t == "f16" else ""
    host = f"kernel_mul_mv_{t}_f32{suffix}"
    path = prepare() / "mul_mv.metal"
    args = kargs("ggml_metal_kargs_mul_mv", ne00=k, ne01=n, ne02=1, nb00=ts, nb01=w.shape[1],
                 nb02=w.nbytes, nb03=w.nbytes, ne10=k, ne11=m, ne12=1, nb10=4, nb11=4 * k, nb12=4 * k * m,
                 nb13=4 * k * m, ne0=n, ne1=m, nr0=nr0, r2=1, r3=1)
    rows_per_group = nr0 if t in ("f16", "q8_0") else nr0 * nsg  # ggml_metal_op_mul_mat's two grids
    return [Launch(path, _mv_compile_kwargs(host, nsg), host, [args, w, x, np.zeros(m * n, np.float32)],
                   (-(-n // rows_per_group), m, 1), (32, nsg, 1), _threadgroup_buffers(path, host, smem), 3,
                   out_shape=(m, n))]


def mul_mv_ext(qtype: str, w_raw: np.ndarray, x: np.ndarray) -> list[Launch]:
    """``kernel_mul_mv_ext_<t>_f32_r1_<r1ptg>``: llama.cpp's small-batch kernel (2..8 rows; K-quants 4..8;
    K a multiple of 128)."""
    x = _activations(x)
    m, k = x.shape
    t, ts, w = _weights(qtype, w_raw, k)
    if t not in EXT_ROWS or not EXT_ROWS[t][0] <= m <= EXT_ROWS[t][1] or k % 128:
        raise ValueError(f"llama.cpp runs kernel_mul_mv_ext for {sorted(EXT_ROWS)} with K % 128 == 0 and "
                         f"{EXT_ROWS.get(t, (2, 8))[0]} <= M <= 8; got {t}, M = {m}, K = {k}")
    n = w.shape[0]
    nsg = 2
    nxpsg = 16 if k % 256 == 0 and m < 3 else 8 if k % 128 == 0 else 4
    r0ptg, r1ptg = 32 // nxpsg * nsg, EXT_R1PTG[m]
    host = f"kernel_mul_mv_ext_{t}_f32_r1_{r1ptg}"
    path = prepare() / "mul_mv.metal"
    args = kargs("ggml_metal_kargs_mul_mv_ext", ne00=k, ne01=n, ne02=1, nb00=ts, nb01=w.shape[1],
                 nb02=w.nbytes, nb03=w.nbytes, ne10=k, ne11=m, ne12=1, nb10=4, nb11=4 * k, nb12=4 * k * m,
                 nb13=4 * k * m, ne0=n, ne1=m, r2=1, r3=1)
    fcs = {FC_MUL_MV + 0: nsg, FC_MUL_MV + 1: nxpsg, FC_MUL_MV + 2: 1, FC_MUL_MV + 3: 1, FC_MUL_MV + 4: 1}
    return [Launch(path, {"function_constants": fcs}, host, [args, w, x, np.zeros(m * n, np.float32)],
                   (-(-n // r0ptg), -(-m // r1ptg), 1), (32, nsg, 1), _threadgroup_buffers(path, host, 0), 3,
                   out_shape=(m, n))]


def mul_mm(qtype: str, w_raw: np.ndarray, x: np.ndarray) -> list[Launch]:
    """``kernel_mul_mm_<t>_f32``: 64 x 32 output tiles, 4 simdgroups, half-precision simdgroup matrices
    (llama.cpp's path for M > 8 and K >= 64 on GPUs without the tensor API, e.g. M1-M4)."""
    x = _activations(x)
    m, k = x.shape
    t, ts, w = _weights(qtype, w_raw, k)
    if m <= 8 or k < 64:
        raise ValueError(f"llama.cpp runs kernel_mul_mm for M > 8 and K >= 64; got M = {m}, K = {k}")
    n = w.shape[0]
    bc_inp, bc_out = k % 32 != 0, n % 64 != 0 or m % 32 != 0
    host = f"kernel_mul_mm_{t}_f32"
    path = prepare() / "mul_mm.metal"
    args = kargs("ggml_metal_kargs_mul_mm", ne00=k, ne02=1, nb01=w.shape[1], nb02=w.nbytes, nb03=w.nbytes,
                 ne12=1, nb10=4, nb11=4 * k, nb12=4 * k * m, nb13=4 * k * m, ne0=n, ne1=m, r2=1, r3=1)
    fcs = {FC_MUL_MM + 0: bc_inp, FC_MUL_MM + 1: bc_out, FC_MUL_MM + 2: 1, FC_MUL_MM + 3: 1, FC_MUL_MM + 4: 1,
           FC_MUL_MM + 5: 1}
    smem = 8192 if bc_out else 4096 + 2048
    return [Launch(path, {"function_constants": fcs}, host, [args, w, x, np.zeros(m * n, np.float32)],
                   (-(-m // 32), -(-n // 64), 1), (32, 4, 1), _threadgroup_buffers(path, host, smem), 3,
                   out_shape=(m, n))]


def _experts(qtype, w_raw_experts, x, ids):
    """Checked (type, type size, weights, x, ids, ne11) of a mul_mat_id call."""
    x = _activations(x, ndim=(2, 3))
    ids = np.asarray(ids)
    if ids.dtype != np.int32 or ids.ndim != 2:
        raise ValueError(f"ids must be (T, U) int32, got {ids.dtype} {ids.shape}")
    k = x.shape[-1]
    t, ts, w = _weights(qtype, w_raw_experts, k, ndim=3)
    if x.shape[0] != ids.shape[0] or (x.ndim == 3 and x.shape[1] not in (1, ids.shape[1])):
        raise ValueError(f"x {x.shape} does not match ids {ids.shape}: (T, K), (T, 1, K) or (T, U, K)")
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise ValueError(f"ids must lie in [0, {w.shape[0]})")
    return t, ts, w, x, np.ascontiguousarray(ids), x.shape[1] if x.ndim == 3 else 1


def mul_mm_id(qtype: str, w_raw_experts: np.ndarray, x: np.ndarray, ids: np.ndarray) -> list[Launch]:
    """``kernel_mul_mm_id_map0_ne20_<U>`` (tokens per expert and their slots) then ``kernel_mul_mm_id_<t>_f32``:
    slot (t, u) = W[ids[t, u]] @ x[t] (x (T, K) or ggml's (T, 1, K), broadcast) or x[t, u] (x (T, U, K)). llama.cpp takes this
    path for T >= 32 tokens and K >= 64 (fewer tokens: :func:`mul_mv_id`)."""
    t, ts, w, x, ids, ne11 = _experts(qtype, w_raw_experts, x, ids)
    (n_tok, n_used), k = ids.shape, x.shape[-1]
    n_exp, n = w.shape[:2]
    if n_tok < 32 or k < 64:
        raise ValueError(f"llama.cpp runs kernel_mul_mm_id for T >= 32 tokens and K >= 64; got T = {n_tok}, K = {k}")
    if n_used not in MAP0_NE20 or n_exp > MAX_THREADS:
        raise ValueError(f"kernel_mul_mm_id_map0 exists for U in {MAP0_NE20} and E <= {MAX_THREADS}; "
                         f"got U = {n_used}, E = {n_exp}")
    nb11, nb12 = 4 * k, 4 * k * ne11
    mm = prepare() / "mul_mm.metal"
    fcs = {"function_constants": {FC_MUL_MM + 0: k % 32 != 0, FC_MUL_MM + 6: False}}  # no amax (GGML_PREC_DEFAULT)
    map_args = kargs("ggml_metal_kargs_mul_mm_id_map0", ne02=n_exp, ne10=k, ne11=ne11, nb11=nb11, nb12=nb12,
                     ne21=n_tok, ne20=n_used, nb21=4 * n_used)
    tpe = np.zeros(n_exp, np.uint32)
    hids = np.zeros(n_exp * n_tok, np.int32)
    map_host = f"kernel_mul_mm_id_map0_ne20_{n_used}"
    smem = -(-(n_exp * n_used * 2) // 16) * 16
    map0 = Launch(mm, fcs, map_host, [map_args, ids, tpe, hids], (1, 1, 1), (n_exp, 1, 1),
                  _threadgroup_buffers(mm, map_host, smem), 3)
    args = kargs("ggml_metal_kargs_mul_mm_id", ne00=k, ne02=n_exp, nb01=w.shape[2], nb02=w.shape[1] * w.shape[2],
                 nb03=w.nbytes, ne11=ne11, nb10=4, nb11=nb11, nb12=nb12, nb13=nb12 * n_tok, ne20=n_used,
                 ne21=n_tok, ne0=n, ne1=n_used, r2=1, r3=1)
    amax = np.zeros(2 + 256, np.float32)  # bound as llama.cpp binds it; read only with GGML_PREC_F32
    host = f"kernel_mul_mm_id_{t}_f32"
    mm_id = Launch(mm, fcs, host, [args, w, x, tpe, hids, np.zeros(n_tok * n_used * n, np.float32), amax],
                   (-(-n_tok // 32), -(-n // 64), n_exp), (128, 1, 1), _threadgroup_buffers(mm, host, 8192), 5,
                   feeds={3: (0, 2), 4: (0, 3)}, out_shape=(n_tok, n_used, n))
    return [map0, mm_id]


def mul_mv_id(qtype: str, w_raw_experts: np.ndarray, x: np.ndarray, ids: np.ndarray) -> list[Launch]:
    """``kernel_mul_mv_id_<t>_f32``: one mat-vec per slot (grid z = T * U), each on its expert's rows; what
    llama.cpp runs for mul_mat_id below 32 tokens (or K < 64). Same slots and result shape as
    :func:`mul_mm_id`."""
    t, ts, w, x, ids, ne11 = _experts(qtype, w_raw_experts, x, ids)
    (n_tok, n_used), k = ids.shape, x.shape[-1]
    n_exp, n = w.shape[:2]
    nsg, nr0, smem = _mv_geometry(t, k)
    host = f"kernel_mul_mv_id_{t}_f32" + ("_4" if t == "f16" and k % 4 == 0 else "")
    path = prepare() / "mul_mv.metal"
    args = kargs("ggml_metal_kargs_mul_mv_id", nei0=n_used, nei1=n_tok, nbi1=4 * n_used, ne00=k, ne01=n,
                 ne02=n_exp, nb00=ts, nb01=w.shape[2], nb02=w.shape[1] * w.shape[2], ne10=k, ne11=ne11,
                 ne12=n_tok, ne13=1, nb10=4, nb11=4 * k, nb12=4 * k * ne11, ne0=n, ne1=n_used, nb1=4 * n,
                 nr0=nr0)
    rows_per_group = nr0 if t in ("f16", "q8_0") else nr0 * nsg
    return [Launch(path, _mv_compile_kwargs(host, nsg), host,
                   [args, w, x, np.zeros(n_tok * n_used * n, np.float32), ids],
                   (-(-n // rows_per_group), 1, n_tok * n_used), (32, nsg, 1),
                   _threadgroup_buffers(path, host, smem), 3, out_shape=(n_tok, n_used, n))]


def mul_mat(qtype: str, w_raw: np.ndarray, x: np.ndarray) -> list[Launch]:
    """The launches ggml_metal_op_mul_mat makes for x (M, K): :func:`mul_mv_ext`, :func:`mul_mm` or :func:`mul_mv`."""
    x = _activations(x)
    (m, k), t = x.shape, _type(qtype)[0]
    if 2 <= m <= 8 and k % 128 == 0 and t == "f16":
        raise ValueError("llama.cpp runs kernel_mul_mv_ext_f16_f32 here, which the harness cannot compile (its "
                         "dequantize_f16_t4 converts half4 to float4 with a C-style cast, a bit-cast in clang)")
    if t in EXT_ROWS and EXT_ROWS[t][0] <= m <= 8 and k % 128 == 0:
        return mul_mv_ext(t, w_raw, x)
    if m > 8 and k >= 64:
        return mul_mm(t, w_raw, x)
    return mul_mv(t, w_raw, x)


def mul_mat_id(qtype: str, w_raw_experts: np.ndarray, x: np.ndarray, ids: np.ndarray) -> list[Launch]:
    """The launches ggml_metal_op_mul_mat_id makes: :func:`mul_mm_id` for T >= 32 tokens and K >= 64, else
    :func:`mul_mv_id`."""
    big = np.asarray(ids).shape[0] >= 32 and np.asarray(x).shape[-1] >= 64
    return (mul_mm_id if big else mul_mv_id)(qtype, w_raw_experts, x, ids)


def get_rows(qtype: str, w_raw: np.ndarray, rows) -> list[Launch]:
    """``kernel_get_rows_<t>``: rows of W decoded to float32, one 16-element chunk per thread."""
    rows = np.ascontiguousarray(rows, dtype=np.int32).reshape(-1)
    t, qk, ts = _type(qtype)[0], *_type(qtype)[2:]
    w = np.ascontiguousarray(w_raw)
    if w.dtype != np.uint8 or w.ndim != 2 or w.shape[1] % ts:
        raise ValueError(f"w_raw must be (N, bytes per row) uint8 {t} blocks, got {w.dtype} {w.shape}")
    n, k = w.shape[0], w.shape[1] // ts * qk
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"rows must lie in [0, {n})")
    r = rows.size
    ne00t = k // 16 if t != "f16" else k
    nth = min(ne00t, MAX_THREADS)
    args = kargs("ggml_metal_kargs_get_rows", ne00t=ne00t, ne00=k, nb01=w.shape[1], nb02=w.nbytes,
                 nb03=w.nbytes, ne10=r, nb10=4, nb11=4 * r, nb12=4 * r, nb1=4 * k, nb2=4 * k * r, nb3=4 * k * r)
    path = prepare() / "quantize.metal"
    host = f"kernel_get_rows_{t}"
    return [Launch(path, {}, host, [args, w, rows, np.zeros(r * k, np.float32)],
                   (-(-ne00t // nth) * r, 1, 1), (nth, 1, 1), _threadgroup_buffers(path, host, 0), 3,
                   out_shape=(r, k))]


def run(launches: list[Launch]) -> np.ndarray:
    """Run the launches in order (feeding earlier results forward); the last one's result in ggml's shape."""
    last = launches[-1]
    res = msl_harness.dispatch_all(launches)[-1]
    unwritten = res.unwritten.get(last.out_index, 0)
    if unwritten:
        raise msl_harness.MslError(f"{last.host_name}: {unwritten} output elements were never written")
    return np.asarray(res.buffers[last.out_index]).reshape(last.out_shape)
