"""The fiber scheduler's Python side: builds ``runtime/scheduler.c`` (linked into every compiled .metal
library), mirrors its ``msl_dispatch`` structure and turns launch options into it.

The scheduler runs each threadgroup's threads as cooperatively switched fibers: a thread runs until it
reaches a barrier, a SIMD-group function or its end; when no thread can run, the scheduler releases a
SIMD-group collective (every live lane of the simdgroup waits at the same call site) or the threadgroup
barrier (every thread of the group waits at the same one), or reports why neither is possible. Launch
options (``Library.dispatch_threads(..., **opts)``):

- ``schedule``: ``"forward"`` (default), ``"reverse"`` or ``"random"`` (with ``seed``): the order in which
  runnable threads run between synchronisations; a missing barrier shows as poison reads or a result
  that depends on it.
- ``simd_order``: how ``simd_sum`` and the other reductions combine lanes: ``"butterfly"`` (default: lane i
  combines with lane i+d for d = 16, 8, 4, 2, 1), ``"adjacent"`` (pairs (0,1), (2,3), ..., then (0,2), ...),
  ``"sequential"`` (((l0 + l1) + l2) + ...). Apple does not document its order.
- ``check_uninitialized``: a read of threadgroup memory that no thread of the group has written is an error
  (off by default: harmless over-reads, e.g. a vector load of padding, are common).
- ``fibers`` (handled by the launcher): None runs a launch serially until the kernel first synchronises
  and then reruns it on fibers; True always uses fibers, False never.
- ``mma_order``: how ``simdgroup_multiply_accumulate`` sums each row-column product into C:
  ``"fma"`` (default: acc = fma(a_k, b_k, acc) from acc = c, k = 0..7), ``"sequential"`` (acc + a_k*b_k,
  rounded each step) or ``"pairwise"`` (c + ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7))); in float, rounded once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "runtime" / "scheduler.c"
TRACE_SOURCE = HERE / "runtime" / "trace.c"  # included by scheduler.c
HEADER = HERE / "shim" / "msl_scheduler.h"

MAX_TG_PARAMS = 31
SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}
SIMD_ORDERS = {"butterfly": 0, "adjacent": 1, "sequential": 2}
MMA_ORDERS = {"fma": 0, "sequential": 1, "pairwise": 2}
MODE_AUTO, MODE_SERIAL, MODE_FIBERS = 0, 1, 2
OK, ERROR, NEEDS_FIBERS = 0, 1, 2


class Dispatch(ctypes.Structure):
    """``msl_dispatch`` of msl_scheduler.h."""
    _fields_ = [
        ("ngroups", ctypes.c_uint32 * 3), ("tdecl", ctypes.c_uint32 * 3), ("grid", ctypes.c_uint32 * 3),
        ("schedule", ctypes.c_uint32), ("simd_order", ctypes.c_uint32), ("mma_order", ctypes.c_uint32),
        ("mode", ctypes.c_uint32), ("poison", ctypes.c_uint32), ("check_uninitialized", ctypes.c_uint32),
        ("seed", ctypes.c_uint64), ("bufs", ctypes.c_uint64),
        ("tg_param_size", ctypes.c_uint64 * MAX_TG_PARAMS),
        ("error", ctypes.c_uint64), ("error_len", ctypes.c_uint64),
        ("per_thread", ctypes.c_void_p), ("serial", ctypes.c_void_p),
        ("trace", ctypes.c_uint64), ("group_list", ctypes.c_uint64), ("n_group_list", ctypes.c_uint64),
    ]


def _choice(table: dict, name: str, value) -> int:
    if value not in table:
        raise ValueError(f"{name}={value!r}: expected one of {sorted(table)}")
    return table[value]


def make_dispatch(groups, group, grid, bufs_addr: int, *, poison: int, schedule="forward", seed=0,
                  simd_order="butterfly", mma_order="fma", check_uninitialized=False,
                  threadgroup_params=None) -> tuple[Dispatch, object]:
    """The dispatch structure and the error buffer it points to (keep both alive during the call)."""
    d = Dispatch()
    d.ngroups[:], d.tdecl[:], d.grid[:] = groups, group, grid
    d.schedule = _choice(SCHEDULES, "schedule", schedule)
    d.simd_order = _choice(SIMD_ORDERS, "simd_order", simd_order)
    d.mma_order = _choice(MMA_ORDERS, "mma_order", mma_order)
    d.seed = int(seed) & (2**64 - 1)
    d.check_uninitialized = bool(check_uninitialized)
    d.poison = poison
    d.bufs = bufs_addr
    for index, nbytes in (threadgroup_params or {}).items():
        d.tg_param_size[index] = nbytes
    err = ctypes.create_string_buffer(4096)
    d.error, d.error_len = ctypes.addressof(err), len(err)
    return d, err


@functools.cache
def runtime_object(clang: str, cache: Path, flags: tuple[str, ...]) -> Path:
    """scheduler.c compiled once per content and flags (cached beside the kernel libraries)."""
    h = hashlib.sha256(SOURCE.read_bytes() + TRACE_SOURCE.read_bytes() + HEADER.read_bytes() + Path(__file__).read_bytes()
                       + " ".join(flags).encode()).hexdigest()[:16]
    obj = cache / f"msl-scheduler-{h}.o"
    if not obj.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_suffix(f".{os.getpid()}.o")
        # hidden: every kernel library links its own copy (its own state), invisible to the others
        proc = subprocess.run([clang, "-x", "c", "-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", *flags,
                               "-c", str(SOURCE), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{proc.stderr}")
        tmp.replace(obj)
    return obj
