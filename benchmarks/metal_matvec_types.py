"""The Metal mat-vec tier on the non-IQ-grid types outside the first factored set and on the IQ1 types, ours
against llama.cpp's kernel_mul_mv_<type>_f32 under the harness's performance model (harness/perf.py), written
to benchmarks/METAL_MATVEC_TYPES.md.

    python benchmarks/metal_matvec_types.py [--types Q3_K,Q2_K]

With --types, only those rows are measured again; the file's other rows are kept.

For each type, 4096 x 4096, M = 1, f32 x and f32 out: our mul_mv and llama.cpp's (where its Metal backend has
the type; harness/llama_metal.py) traced in the Linux harness (16 threadgroups sampled) and modelled on M2 Max
(M3 Max and M4 Max: % of peak only). Modelled, not measured: no Apple GPU ran. Goal (issue 17): >= 60% of DRAM
peak and >= 1.0x llama.cpp's kernel. The "before" columns hold the figures this same model gave for the
decode-exact mat-vec order of commit 8f5bc2f, which these types ran before they took the factored order.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import msl_harness, perf  # noqa: E402

TYPES = ("Q3_K", "Q2_K", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "TQ1_0", "TQ2_0", "NVFP4", "Q1_0", "Q2_0", "IQ1_S", "IQ1_M")
N = K = 4096

# Commit 8f5bc2f (decode-exact mul_mv), M2 Max, 4096 x 4096, M = 1: µs, % of peak, limiter.
BEFORE = {
    "Q3_K": (89.2, 20, "l1"), "Q2_K": (65.2, 21, "l1"), "Q4_1": (75.7, 35, "l1"), "Q5_0": (81.5, 35, "l1"),
    "Q5_1": (77.7, 41, "l1"), "IQ4_NL": (84.1, 28, "l1"), "TQ1_0": (141.8, 6, "l1"), "TQ2_0": (111.6, 10, "l1"),
    "NVFP4": (68.5, 35, "l1"), "Q1_0": (83.4, 7, "l1"), "Q2_0": (43.6, 27, "l1"),
}
# Commit 8cda5d2 (the factored order before the ultra-low-bit types' decode was reworked), M2 Max, same shape:
# µs, % of peak (Q1_0, TQ1_0: this file; IQ1_S, IQ1_M: METAL_MODEL.md).
FACTORED_8CDA5D2 = {"Q1_0": (14.1, 43), "TQ1_0": (19.9, 45), "IQ1_S": (16.9, 49), "IQ1_M": (19.5, 47)}
# Commit adc61da (after the first rework, before the second: IQ1 index and scale bits by rotates, 8 weight rows per
# simdgroup from M = 1 for IQ1_S, IQ1_M and Q1_0, x quads addressed from the lane's first), same model and shape.
FACTORED_ADC61DA = {"Q1_0": (10.3, 58), "TQ1_0": (17.0, 52), "IQ1_S": (14.6, 57), "IQ1_M": (16.6, 56)}


def measure(qtype: str, rng) -> tuple[dict, dict | None]:
    """(ours, llama.cpp's or None) per chip."""
    from harness import llama_metal

    w = perf._blocks(qtype, N, K, rng)
    x = rng.standard_normal((1, K)).astype(np.float32)
    ours = perf.modelled(perf.ours_linear(qtype, w, x), 16, perf.CHIPS.values())
    if perf.llama_available() is not None or qtype.lower() not in {t.lower() for t in llama_metal.TYPES}:
        return ours, None
    return ours, perf.modelled_llama("mul_mat", qtype, w, x, groups_traced=16, chips=perf.CHIPS.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "METAL_MATVEC_TYPES.md")
    args = ap.parse_args(argv)
    if not msl_harness.available():
        print(f"{msl_harness.CLANG} not found", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    header = ["| type | before µs | before % of peak | before limiter | µs (M2 Max) | % of peak | limiter | "
              "llama.cpp µs | llama.cpp % of peak | llama.cpp limiter | ours / llama speed | M3 Max % | M4 Max % |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    types = args.types.split(",")
    rows = {}  # type -> table row; with --types, the file's other rows are kept
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            name = line.split("|")[1].strip() if line.startswith("| ") else ""
            if name in TYPES and name not in types:
                rows[name] = line
    for qtype in types:
        ours, llama = measure(qtype, rng)
        o, ll = ours["M2 Max"], (llama or {}).get("M2 Max")
        us, pct, lim = BEFORE.get(qtype, ("–", "–", "–"))
        theirs = (f"{ll.seconds * 1e6:.1f} | {100 * ll.dram_fraction:.0f}% | {ll.limiter} | "
                  f"{ll.seconds / o.seconds:.2f}x" if ll else "– | – | – | –")
        pct = "–" if pct == "–" else f"{pct}%"
        rows[qtype] = (f"| {qtype} | {us} | {pct} | {lim} | {o.seconds * 1e6:.1f} | {100 * o.dram_fraction:.0f}% | "
                       f"{o.limiter} | {theirs} | {100 * ours['M3 Max'].dram_fraction:.0f}% | "
                       f"{100 * ours['M4 Max'].dram_fraction:.0f}% |")
        print(rows[qtype], flush=True)
    lines = header + [rows[t] for t in TYPES if t in rows]
    earlier = ", ".join(f"{t} {us} µs ({pct}%)" for t, (us, pct) in FACTORED_8CDA5D2.items())
    second = ", ".join(f"{t} {us} µs ({pct}%)" for t, (us, pct) in FACTORED_ADC61DA.items())
    text = [
        "# The Metal mat-vec tier on the other non-IQ-grid types and the IQ1 types, ours against llama.cpp\n",
        f"Generated by `python benchmarks/metal_matvec_types.py` on {datetime.date.today()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; rows measured again with --types keep the "
        "others). Modelled, not measured (harness/perf.py: "
        "DRAM, L1, issue and threadgroup time from the harness's trace of each launch; the largest is the limiter). "
        f"{N} x {K}, M = 1, f32 x. Goal: >= 60% of DRAM peak and >= 1.0x llama.cpp's kernel where it has the type "
        "(its Metal backend has no TQ1_0 or NVFP4 mat-vec). Before: the decode-exact order of commit 8f5bc2f; now: "
        "the factored order (launch.MV_FACTORED).\n",
        *lines, "",
        f"The ultra-low-bit types in the factored order at commit 8cda5d2, before their decode was reworked (M2 Max): "
        f"{earlier}. At commit adc61da, before the second rework: {second}.\n",
    ]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
