"""Where `linear` on packed weights beats transformers' > 8-row path, per type and activation dtype.

    python benchmarks/linear_routing.py [--types Q4_K,Q6_K] [--rows 16,32,64,128,512] [--repeat 3]

transformers' `GgufLinear` multiplies prompts of more than 8 rows by dequantizing the weight to x's dtype (on this
kernel, through `install_kernel`) and `x @ W.T` with torch; `linear` computes on the packed blocks (the mat-vec tier,
the AMX tier for bfloat16 x on its types, else the float32 matrix kernel). Both are timed on the shapes of an
LFM2-350M feed-forward block (w1: 4608 x 1024, then w2: 1024 x 4608; random blocks with finite scales), one thread,
process CPU time (other jobs on the machine do not inflate it), best of ``--repeat``. The result table is written
to benchmarks/LINEAR_ROUTING.md; `gguf_dequant.integrations.transformers.LINEAR_MAX_ROWS` encodes it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gguf_dequant import testing  # noqa: E402
from gguf_dequant.integrations.transformers import load_kernel  # noqa: E402
from gguf_dequant.types import resolve  # noqa: E402

SHAPES = [(4608, 1024), (1024, 4608)]  # LFM2-350M's w1 (and w3), w2
DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}
MARGIN = 1.1  # `linear` counts as faster when it takes at most 1/1.1 of the time (run-to-run noise is a few %)


def cpu_ms(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,IQ4_XS,IQ4_NL,MXFP4,"
                                        "IQ2_XXS,IQ3_S,BF16,F16")
    ap.add_argument("--rows", default="16,32,64,128,512")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "LINEAR_ROUTING.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    k = load_kernel()
    rows = [int(r) for r in args.rows.split(",")]
    start = time.time()
    lines = ["# `linear` vs dequantize + matmul for prompts of more than 8 rows", "",
             f"Command: `python benchmarks/linear_routing.py`. Shapes: LFM2-350M's feed-forward weights "
             f"{' then '.join(f'{n} x {kk}' for n, kk in SHAPES)} (times summed). One thread, process CPU time, "
             f"best of {args.repeat}. `dequant + mm`: transformers' path above 8 rows (this kernel's `dequantize` to "
             "x's dtype, then `x @ W.T`); `linear`: compute on the packed blocks. Ratio > 1: `linear` is faster.", "",
             "| type | x | " + " | ".join(f"M = {m}: linear ms | dequant + mm ms | ratio" for m in rows) +
             " | linear wins up to M |",
             "|---|---|" + "---:|---:|---:|" * len(rows) + "---:|"]
    for name in args.types.split(","):
        t = resolve(name)
        weights = []
        for n, kk in SHAPES:
            raw = testing.random_blocks(name, n * kk // t.block_elems, np.random.default_rng(t.id))
            weights.append((torch.from_numpy(raw.reshape(n, -1)), n, kk))
        for label, dtype in DTYPES.items():
            cells, wins = [], 8
            for m in rows:
                xs = [torch.randn(m, kk, dtype=dtype) for _, _, kk in weights]

                def packed():
                    for (w, _, _), x in zip(weights, xs):
                        k.linear(x, w, t.id)

                def unpacked():
                    for (w, n, kk), x in zip(weights, xs):
                        x @ k.dequantize(w, t.id, n, kk, dtype).T

                a, b = cpu_ms(packed, args.repeat), cpu_ms(unpacked, args.repeat)
                cells.append(f"{a:.2f} | {b:.2f} | {b / a:.2f}x")
                if b / a >= MARGIN and wins == m_prev(rows, m):
                    wins = m
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {wins} |")
            print(lines[-1], flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    lines += ["", "\"linear wins up to M\": the largest M in the table up to which every measured M has ratio >= "
              f"{MARGIN} (8: never above the mat-vec tier).", "",
              f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), torch "
              f"{torch.__version__}; {datetime.date.today()}; load average {os.getloadavg()[0]:.1f} at the end "
              f"(process CPU time: other jobs slow the run, not its figures, apart from shared caches). Run time "
              f"{time.time() - start:.0f} s.", ""]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


def m_prev(rows: list[int], m: int) -> int:
    """The row count before ``m`` in the table (8, the mat-vec tier's last, before the first)."""
    i = rows.index(m)
    return rows[i - 1] if i else 8


if __name__ == "__main__":
    sys.exit(main())
