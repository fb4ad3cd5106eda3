"""The harness's own cost on a 4096 x 4096 reduction-style kernel (harness/cost.metal): seconds per launch
on one core (the scheduler runs a launch on the calling OS thread; wall and CPU time, the latter steadier
on a shared machine), and the error against numpy's float64 product.

    python -m harness.cost [--n 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from . import msl_harness


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.cost", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.n
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, n)).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    want = w.astype(np.float64) @ x.astype(np.float64)
    path = Path(__file__).with_name("cost.metal")
    print(f"{n} x {n} float32, groups of 128 threads (4 simdgroups, one row each), best of {args.repeat}:")
    for name, race_check in (("rows_dot", True), ("rows_dot_staged", True), ("rows_dot_staged", False)):
        lib = msl_harness.compile(path, race_check=race_check)
        for schedule in ("forward", "reverse"):
            best = cpu = float("inf")
            for _ in range(args.repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                res = lib.dispatch_threadgroups(name, [w, x, np.zeros(n, np.float32), np.uint32(n)], n // 4, 128,
                                                schedule=schedule)
                best = min(best, time.perf_counter() - start)
                cpu = min(cpu, time.process_time() - start_cpu)
            err = np.abs(res.buffers[2] - want).max() / (np.abs(w) @ np.abs(x)).max()
            label = name + ("" if race_check else " (race_check=False)")
            print(f"  {label:36s} {schedule:8s} {best:6.3f} s/launch ({cpu:6.3f} s CPU)   "
                  f"max |err| / (|W||x|) = {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
