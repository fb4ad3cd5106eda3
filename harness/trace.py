"""Trace builds of the harness: what a launch asks of an Apple GPU, counted on the CPU.

``msl_harness.compile(path, trace=True)`` builds the kernel library from optimised LLVM IR (x86-64 target,
vectorisers off so that each lane's work stays scalar as on the GPU) in which

- every load and store through a device, constant, threadgroup or generic pointer (and every memcpy /
  memset on one) calls ``msl_trace_mem`` with its address, size and static site;
- every basic block of the kernel code starts with a call to ``msl_trace_block``; each block's
  instruction mix is counted here, by class, from the IR (``MIX_RULES``).

A traced launch (``Library.dispatch_threadgroups(..., trace=True, groups_traced=...)``) runs on fibers,
optionally on a sample of its threadgroups, and the runtime (``runtime/trace.c``) matches each simdgroup's
accesses across lanes: the k-th execution of a static access by each lane is one SIMD memory instruction,
with its distinct 128-byte lines, 32-byte sectors and used bytes. ``Trace`` holds the totals, extrapolated
to the whole grid when groups were sampled. ``harness/perf.py`` turns a trace into modelled time.

What the counts are: the IR that clang-19 optimises for x86-64 at -O2, not Apple's compiler output. Loads
of a whole struct may become one memcpy (counted as ceil(bytes / 16) memory instructions), address
arithmetic is counted where it is not folded into a load, and integer extensions and truncations are free.
The same rules apply to every kernel measured, ours and llama.cpp's alike.
"""

from __future__ import annotations

import ctypes
import dataclasses
import re

import numpy as np

from .instrument import _DBG, _MEM, _Locations, _args, _sizeof, _split_type

# Files whose code is emulation, not kernel work (the scheduler interface and the SIMD-group shim), and
# the generated launcher.
EMULATION_FILES = ("msl_sync.h", "msl_scheduler.h")

CLASSES = ("float", "int", "conv", "mem_device", "mem_constant", "mem_threadgroup", "mem_generic",
           "mem_private", "simd", "simd_matrix", "barrier", "control")

# SIMD-group functions by what they cost in issue slots per lane (assumptions, the same for every kernel):
# a reduction is 5 shuffle + 5 combine steps over 32 lanes; a shuffle, broadcast or vote is one
# instruction; an 8x8x8 simdgroup multiply-accumulate is 512 multiply-adds over 32 lanes, 16 slots at the
# FFMA rate (llama.cpp's mul_mm reaches ~75% of FP32 peak with it, speed.md section 4).
SIMD_COST = {"simd_sum": 10, "simd_product": 10, "simd_min": 10, "simd_max": 10, "simd_and": 10, "simd_or": 10,
             "simd_xor": 10, "simd_prefix_inclusive_sum": 10, "simd_prefix_exclusive_sum": 10,
             "simd_prefix_inclusive_product": 10, "simd_prefix_exclusive_product": 10,
             "quad_sum": 4, "quad_product": 4, "quad_min": 4, "quad_max": 4}
MATRIX_OPS = {"simdgroup_multiply_accumulate": 16, "simdgroup_multiply": 16}

_FLOAT_OPS = {"fadd", "fsub", "fmul", "fdiv", "frem", "fcmp"}
_INT_OPS = {"add", "sub", "mul", "udiv", "sdiv", "urem", "srem", "shl", "lshr", "ashr", "and", "or", "xor", "icmp",
            "select"}
_CONV_OPS = {"sitofp", "uitofp", "fptosi", "fptoui", "fpext", "fptrunc"}
_FREE_OPS = {"phi", "bitcast", "ptrtoint", "inttoptr", "addrspacecast", "alloca", "freeze", "zext", "sext", "trunc",
             "extractelement", "insertelement", "shufflevector", "extractvalue", "insertvalue", "fneg",
             "unreachable", "ret", "landingpad"}
_FREE_INTRINSICS = ("llvm.lifetime", "llvm.dbg", "llvm.assume", "llvm.experimental.noalias", "llvm.fabs",
                    "llvm.stacksave", "llvm.stackrestore", "llvm.invariant", "llvm.prefetch")
_INT_INTRINSICS = ("llvm.umin", "llvm.umax", "llvm.smin", "llvm.smax", "llvm.abs", "llvm.ctpop", "llvm.ctlz",
                   "llvm.cttz", "llvm.fshl", "llvm.fshr", "llvm.bswap", "llvm.bitreverse", "llvm.usub.sat",
                   "llvm.uadd.sat", "llvm.vector.reduce.add", "llvm.vector.reduce.or", "llvm.vector.reduce.and")
_HARNESS_CALLS = ("msl_tg_access", "msl_tg_alloc", "msl_tg_param", "msl_lane", "msl_trace_")

_DEFINE = re.compile(r"^define\b.*?@(\"[^\"]+\"|[\w.$-]+)\(")
_LABEL = re.compile(r"^([\w.$-]+|\"[^\"]+\"):")
_VEC = re.compile(r"<(\d+) x ")
_PTR = re.compile(r"ptr(?: addrspace\((\d+)\))? (%[\w.$-]+|%\"[^\"]+\"|@[\w.$-]+|null)")
_LOAD = re.compile(r"^\s*(?:%[\w.$-]+|%\"[^\"]+\") = load (?:atomic )?(?:volatile )?(.*?), ptr(?: addrspace\((\d+)\))? "
                   r"(%[\w.$-]+|%\"[^\"]+\"|@[\w.$-]+)")
_STORE = re.compile(r"^\s*store (?:atomic )?(?:volatile )?(.*), ptr(?: addrspace\((\d+)\))? "
                    r"(%[\w.$-]+|%\"[^\"]+\"|@[\w.$-]+)")
_CALL = re.compile(r"\bcall\b[^@]*@(\"[^\"]+\"|[\w.$-]+)\(")
_STRING = re.compile(r'^(@[\w.$-]+) = .*?c"((?:[^"\\]|\\[0-9A-Fa-f]{2}|\\\\)*)"')
_ALLOCA = re.compile(r"^\s*(%[\w.$-]+) = alloca (\[.*?\]|<.*?>|[\w.%]+)")
_GEP = re.compile(r"^\s*%[\w.$-]+ = getelementptr (?:inbounds |nuw |nusw )*(.*?), ptr( addrspace\(\d+\))? "
                  r"(%[\w.$-]+|@[\w.$-]+|\w+ \(.*?\)), (.*?)(?:, !dbg .*)?$")
_ATTRS = re.compile(r"\b(noundef|nonnull|readonly|writeonly|nocapture|align \d+|dereferenceable\(\d+\))\s*")

SPACE_DEVICE, SPACE_CONSTANT, SPACE_THREADGROUP, SPACE_GENERIC = 1, 2, 3, 4
_MEM_CLASS = {None: "mem_private", "0": "mem_private", "1": "mem_device", "2": "mem_constant",
              "3": "mem_threadgroup", "4": "mem_generic"}


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text).replace("\\\\", "\\").rstrip("\0")


def _width(line: str) -> int:
    m = _VEC.search(line)
    return int(m.group(1)) if m else 1


def _opcode(line: str) -> str:
    body = line.split("=", 1)[1] if re.match(r"^\s*%[\w.$\"-]+ = ", line) else line
    body = body.strip()
    for prefix in ("tail ", "musttail ", "notail ", "fast ", "nnan ", "ninf ", "nsz ", "arcp ", "contract ",
                   "afn ", "reassoc ", "nuw ", "nsw ", "exact ", "disjoint ", "nneg "):
        while body.startswith(prefix):
            body = body[len(prefix):]
    return body.split(None, 1)[0] if body else ""


@dataclasses.dataclass
class Site:
    location: str     # file:line of the access
    space: int        # IR address space: 1 device, 2 constant, 3 threadgroup, 4 generic
    write: bool
    what: str         # the IR type moved, or memcpy/memset


@dataclasses.dataclass
class Block:
    function: str
    location: str                          # file:line of its first kernel instruction
    mix: dict[str, float]                  # issue slots per run, by class


@dataclasses.dataclass
class StackArray:
    """A thread array the optimiser left in stack memory and indexes with a run-time value: on the GPU it
    would live in (slow, spilled) device-backed memory or force the whole array out of registers."""
    function: str
    type: str
    location: str


def instrument(ir: str, launcher_file: str) -> tuple[str, dict]:
    """IR with trace calls, and what the runtime's indices mean: ``{"sites": [...], "blocks": [...],
    "stack_arrays": [...]}`` (dataclasses as dicts)."""
    where = _Locations(ir)
    strings = {m.group(1): _unescape(m.group(2)) for m in map(_STRING.match, ir.splitlines()) if m}
    loc_cache: dict[str, str] = {}

    def location(line: str) -> str:
        m = _DBG.search(line)
        if not m:
            return "?"
        if m.group(1) not in loc_cache:
            loc_cache[m.group(1)] = where(m.group(1))
        return loc_cache[m.group(1)]

    def is_overhead(loc: str) -> bool:
        file = loc.rsplit(":", 1)[0]
        return file.endswith(EMULATION_FILES) or file.endswith(launcher_file)

    sites: list[Site] = []
    blocks: list[Block] = []
    arrays: list[StackArray] = []
    out: list[str] = []
    fn = None           # current function name, None outside or when not instrumented
    block: Block | None = None
    allocas: dict[str, str] = {}
    tmp = 0

    def new_block(indent_at: int):
        nonlocal block
        block = Block(fn, "?", {c: 0.0 for c in CLASSES})
        blocks.append(block)
        out.insert(indent_at, f"  call void @msl_trace_block(i32 {len(blocks) - 1})")

    def mem(space: str | None, ptr: str, size: str, write: bool, what: str, line: str, loc: str):
        nonlocal tmp
        if space in (None, "0"):
            return  # private: the thread's own registers or stack
        sites.append(Site(loc, int(space), write, what))
        tmp += 1
        dbg = f", !dbg {_DBG.search(line).group(1)}" if _DBG.search(line) else ""
        out.append(f"  %msl.tr.{tmp} = ptrtoint ptr addrspace({space}) {ptr} to i64")
        code = int(write) | int(space) << 1
        out.append(f"  call void @msl_trace_mem(i64 %msl.tr.{tmp}, i64 {size}, i32 {code}, i32 {len(sites) - 1}){dbg}")

    pending_block = False
    for line in ir.splitlines():
        if line.startswith("define "):
            m = _DEFINE.match(line)
            name = m.group(1) if m else ""
            fn = None if ("msl_launch_" in name or "msl_serial_" in name) else name
            allocas = {}
            out.append(line)
            if fn is not None:
                new_block(len(out))
            continue
        if fn is None:
            out.append(line)
            continue
        if line.startswith("}"):
            fn = None
            block = None
            out.append(line)
            continue
        if _LABEL.match(line):
            out.append(line)
            pending_block = True
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            out.append(line)
            continue
        if pending_block and not re.match(r"^\s*%[\w.$\"-]+ = (phi|landingpad)\b", line):
            new_block(len(out))
            pending_block = False
        loc = location(line)
        if block.location == "?" and loc != "?" and not is_overhead(loc):
            block.location = loc
        op = _opcode(line)
        cls, cost = None, 0.0
        if m := _ALLOCA.match(line):
            allocas[m.group(1)] = m.group(2)
        elif (m := _GEP.match(line)) and not m.group(2) and m.group(3) in allocas \
                and allocas[m.group(3)].startswith("["):
            indices = _args(m.group(4))
            if any("%" in i for i in indices) and not is_overhead(loc):
                arrays.append(StackArray(fn, allocas[m.group(3)], loc))
        if op == "load" and (m := _LOAD.match(line)):
            mem(m.group(2), m.group(3), _sizeof(m.group(1).strip()), False, m.group(1).strip(), line, loc)
            cls, cost = _MEM_CLASS[m.group(2)], 1
        elif op == "store" and (m := _STORE.match(line)):
            ty = _split_type(m.group(1))
            mem(m.group(2), m.group(3), _sizeof(ty), True, ty, line, loc)
            cls, cost = _MEM_CLASS[m.group(2)], 1
        elif m := _MEM.match(line):  # groups: indent, cpy/move/set, arguments
            args = _args(m.group(3))
            size = args[2].split(None, 1)[1]
            parts = ((0, True), (1, False)) if m.group(2) != "set" else ((0, True),)
            n16 = -(-int(size) // 16) if size.isdigit() else 1
            for pos, write in parts:
                pm = _PTR.match(_ATTRS.sub("", args[pos]))
                space = pm.group(1) if pm else None
                mem(space, pm.group(2) if pm else "", size, write, f"mem{m.group(2)}", line, loc)
                if not is_overhead(loc):
                    block.mix[_MEM_CLASS[space]] += n16
            out.append(line)
            continue
        elif op == "call" or op.startswith("call"):
            cm = _CALL.search(line)
            callee = cm.group(1) if cm else ""
            if callee == "msl_collective":
                what = next((strings.get(a.split()[-1], "") for a in _args(line[line.index("@msl_collective(") + 16:
                                                                             line.rindex(")")])
                             if a.split()[-1] in strings), "")
                if what in MATRIX_OPS:
                    cls, cost = "simd_matrix", MATRIX_OPS[what]
                else:
                    cls, cost = "simd", SIMD_COST.get(what, 1)
                block.mix[cls] += cost
                out.append(line)
                continue
            if callee == "msl_barrier":
                block.mix["barrier"] += 1
                out.append(line)
                continue
            if callee.startswith(_HARNESS_CALLS) or callee.startswith(_FREE_INTRINSICS):
                cls = None
            elif callee.startswith(("llvm.fma", "llvm.fmuladd", "llvm.minnum", "llvm.maxnum", "llvm.minimum",
                                    "llvm.maximum", "llvm.copysign", "llvm.floor", "llvm.ceil", "llvm.trunc",
                                    "llvm.rint", "llvm.round", "llvm.nearbyint", "llvm.sqrt", "llvm.exp",
                                    "llvm.log", "llvm.sin", "llvm.cos", "llvm.pow", "llvm.ldexp")):
                cls, cost = "float", _width(line)
            elif callee.startswith(_INT_INTRINSICS):
                cls, cost = "int", _width(line) if not callee.startswith("llvm.vector.reduce") else 1
            elif callee.startswith(("llvm.lround", "llvm.llround", "llvm.lrint", "llvm.fptosi.sat",
                                    "llvm.fptoui.sat", "llvm.convert")):
                cls, cost = "conv", _width(line)
            elif callee.startswith("llvm."):
                cls, cost = "int", 1
            else:
                cls, cost = "control", 1  # a call that was not inlined
        elif op in _FLOAT_OPS:
            cls, cost = "float", _width(line)
        elif op in _INT_OPS:
            cls, cost = "int", _width(line)
        elif op in _CONV_OPS:
            cls, cost = "conv", _width(line)
        elif op == "getelementptr":
            # address arithmetic: free when folded into the access (constant offsets), else one integer op
            gm = _GEP.match(line)
            if gm is None or any("%" in a.split()[-1] for a in _args(gm.group(4)) if a):
                cls, cost = "int", 1
        elif op == "br":
            if line.strip().startswith("br i1"):
                cls, cost = "control", 1
        elif op in ("switch", "indirectbr"):
            cls, cost = "control", 1
        elif op in ("atomicrmw", "cmpxchg"):
            pm = _PTR.search(line)
            cls, cost = _MEM_CLASS[pm.group(1) if pm else None], 1
        elif op in _FREE_OPS:
            cls = None
        if cls is not None and not is_overhead(loc):
            block.mix[cls] += cost
        out.append(line)
    out.append("declare void @msl_trace_mem(i64, i64, i32, i32)")
    out.append("declare void @msl_trace_block(i32)")
    info = {"sites": [dataclasses.asdict(s) for s in sites],
            "blocks": [dataclasses.asdict(b) for b in blocks],
            "stack_arrays": [dataclasses.asdict(a) for a in arrays]}
    return "\n".join(out) + "\n", info


# ---- the runtime's record and what a launch's trace says ----------------------------------------------

MAX_BUFS = 32
SITE_FIELDS = ("instances", "lines", "sectors", "bytes_used", "lane_bytes", "lane_accesses", "spaces")
SPACES = ("device", "constant", "threadgroup")


class MslTrace(ctypes.Structure):
    """``msl_trace`` of shim/msl_scheduler.h."""
    _fields_ = [
        ("n_sites", ctypes.c_uint32), ("n_blocks", ctypes.c_uint32), ("n_bufs", ctypes.c_uint32),
        ("tg_bytes", ctypes.c_uint32),
        ("buf_addr", ctypes.c_uint64 * MAX_BUFS), ("buf_size", ctypes.c_uint64 * MAX_BUFS),
        ("site_stats", ctypes.c_uint64), ("block_simd", ctypes.c_uint64), ("block_lane", ctypes.c_uint64),
        ("unique", ctypes.c_uint64 * (MAX_BUFS * 4)),
        ("groups", ctypes.c_uint64), ("simdgroups", ctypes.c_uint64), ("lanes", ctypes.c_uint64),
    ]


def sample_groups(total: int, wanted: int | None) -> np.ndarray | None:
    """Linear indices of ``wanted`` threadgroups spread evenly over ``total`` (first and last included), or
    None for all of them."""
    if wanted is None or wanted >= total:
        return None
    if wanted < 1:
        raise ValueError(f"groups_traced={wanted}: trace at least one threadgroup")
    return np.unique(np.linspace(0, total - 1, wanted).round().astype(np.uint32))


class Recorder:
    """The runtime's buffers for one traced launch (keep alive during the call)."""

    def __init__(self, info: dict, entry: int, buffers: dict[int, tuple[int, int]]):
        self.info = info
        self.entry = entry  # k of the launcher msl_launch_k: its thread function holds the kernel
        n_sites, n_blocks = len(info["sites"]), len(info["blocks"])
        self.site_stats = np.zeros((max(n_sites, 1), len(SITE_FIELDS)), np.uint64)
        self.block_simd = np.zeros(max(n_blocks, 1), np.uint64)
        self.block_lane = np.zeros(max(n_blocks, 1), np.uint64)
        self.t = MslTrace()
        self.t.n_sites, self.t.n_blocks = n_sites, n_blocks
        self.buffer_index = sorted(buffers)
        if len(self.buffer_index) > MAX_BUFS:
            raise ValueError(f"a traced launch binds at most {MAX_BUFS} buffers")
        self.t.n_bufs = len(self.buffer_index)
        for k, i in enumerate(self.buffer_index):
            self.t.buf_addr[k], self.t.buf_size[k] = buffers[i]
        self.t.site_stats = self.site_stats.ctypes.data
        self.t.block_simd = self.block_simd.ctypes.data
        self.t.block_lane = self.block_lane.ctypes.data

    def result(self, groups_total: int) -> "Trace":
        t = self.t
        traced = int(t.groups)
        scale = groups_total / traced if traced else 0.0
        stats = self.site_stats[: len(self.info["sites"])].astype(np.float64)
        by_space = {}
        for k, space in enumerate(SPACES):
            mask = (self.site_stats[: len(self.info["sites"]), -1].astype(np.uint64) >> np.uint64(k)) & np.uint64(1)
            sel = stats[mask.astype(bool)]
            by_space[space] = {f: float(sel[:, j].sum()) * scale for j, f in enumerate(SITE_FIELDS[:-1])}
        unique = np.array(t.unique, dtype=np.float64).reshape(MAX_BUFS, 2, 2)
        dram = {}
        for k, i in enumerate(self.buffer_index):
            read = unique[k, 0, 0] * scale + unique[k, 0, 1]
            write = unique[k, 1, 0] * scale + unique[k, 1, 1]
            if read or write:
                dram[i] = (min(read, t.buf_size[k]), min(write, t.buf_size[k]))
        mix = np.array([[b["mix"][c] for c in CLASSES] for b in self.info["blocks"]] or np.zeros((0, len(CLASSES))))
        simd = (self.block_simd[: len(mix)].astype(np.float64) @ mix) * scale if len(mix) else np.zeros(len(CLASSES))
        lane = (self.block_lane[: len(mix)].astype(np.float64) @ mix) * scale if len(mix) else np.zeros(len(CLASSES))
        sites = []
        for j, s in enumerate(self.info["sites"]):
            inst = stats[j, 0]
            if inst:
                sites.append({**s, "instances": inst * scale, "lines_per_access": stats[j, 1] / inst,
                              "bytes_per_access": stats[j, 3] / inst, "lanes_per_access": stats[j, 5] / inst})
        return Trace(groups_total=groups_total, groups_traced=traced, simdgroups=int(t.simdgroups) * scale,
                     threads=int(t.lanes) * scale, threadgroup_bytes=int(t.tg_bytes), memory=by_space,
                     dram=dram, simd_instructions=dict(zip(CLASSES, simd.tolist())),
                     lane_instructions=dict(zip(CLASSES, lane.tolist())), sites=sites,
                     stack_arrays=[a for a in self.info["stack_arrays"] if re.search(rf"msl_thread_{self.entry}P",
                                                                                     a["function"])])


@dataclasses.dataclass
class Trace:
    """What one launch asks of the GPU (extrapolated to every group when only some were traced: counts
    scale by groups_total / groups_traced; device bytes that several traced groups shared count once)."""
    groups_total: int
    groups_traced: int
    simdgroups: float
    threads: float
    threadgroup_bytes: int             # threadgroup memory of one group (static arrays + [[threadgroup]] buffers)
    memory: dict                       # space -> {instances, lines, sectors, bytes_used, lane_bytes, lane_accesses}
    dram: dict                         # buffer index -> (unique bytes read, unique bytes written)
    simd_instructions: dict            # class -> SIMD instructions issued (per simdgroup, the busiest lane's path)
    lane_instructions: dict            # class -> instructions summed over lanes
    sites: list                        # per static access: location, space, instances, lines/bytes/lanes per access
    stack_arrays: list                 # thread arrays left in stack memory with dynamic indices (spill risk)

    @property
    def dram_bytes(self) -> float:
        return float(sum(r + w for r, w in self.dram.values()))

    def lines_per_access(self, space: str = "device") -> float:
        m = self.memory[space]
        return m["lines"] / m["instances"] if m["instances"] else 0.0
