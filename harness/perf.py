"""A performance model of Metal launches, computed from harness traces (harness/trace.py), for our kernels and
llama.cpp's own (harness/llama_metal.py) side by side.

Per launch and chip, four times (seconds), each a lower bound on its own:

- DRAM: the unique device bytes the launch reads and writes / the chip's DRAM bandwidth;
- L1: one 128-byte line per core cycle per SIMD memory access (device and constant accesses: the distinct
  lines the 32 lanes of one access touch), over every core;
- issue: SIMD instructions / (cores x 4 schedulers per cycle);
- threadgroup memory: one access per core cycle, or its used bytes / 64 B per cycle if more.

The modelled time is the largest, scaled by the load of the busiest core (threadgroups are dealt to cores
in whole groups); its term is the limiter. Occupancy (threadgroup memory per group against 60 KB per core,
threads per group against 1,024 resident per core, 24 simdgroups for full ALU use) and the thread arrays
that stay in stack memory are reported, not modelled. Chip constants: shared/reference/speed.md section 3
(philipturner/metal-benchmarks, "On-Chip Memory"; Apple's published GPU core counts, clocks and bandwidths).

    python -m harness.perf [--quick] [--chip "M2 Max"] [--out benchmarks/METAL_MODEL.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import msl_harness
from .msl_harness import Launch

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    cores: int
    ghz: float
    dram_gbs: float
    threadgroup_kb_per_core: float = 60.0   # speed.md section 3
    threads_per_core: int = 1024            # resident threads at the register use of these kernels (assumption)
    simdgroups_full_alu: int = 24           # speed.md section 3: ALU use tops out at 24 simdgroups per core
    schedulers: int = 4                     # one SIMD instruction each per cycle
    l1_lines_per_cycle: float = 1.0         # the issue's model: one 128-byte line per core cycle
    threadgroup_bytes_per_cycle: float = 64.0

    @property
    def fp32_tflops(self) -> float:
        return self.cores * self.schedulers * 32 * 2 * self.ghz / 1e3


CHIPS = {
    "M2 Max": Chip("M2 Max", 38, 1.398, 400.0),
    "M3 Max": Chip("M3 Max", 40, 1.40, 400.0),
    "M4 Max": Chip("M4 Max", 40, 1.58, 546.0),
}


@dataclasses.dataclass
class Modelled:
    terms: dict           # name -> seconds (dram, l1, issue, threadgroup)
    seconds: float
    limiter: str
    dram_bytes: float
    dram_fraction: float  # DRAM time / modelled time: the fraction of the chip's peak bandwidth reached
    lines_per_access: float
    simd_instructions: float
    lane_instructions: float
    occupancy: float      # resident simdgroups per core / 24
    stack_arrays: int
    groups: int
    groups_traced: int

    def gbs(self, nbytes: float | None = None) -> float:
        return (self.dram_bytes if nbytes is None else nbytes) / self.seconds / 1e9


def issued(instructions: dict) -> float:
    """Issue slots: every class but private (stack) memory, which x86-64 -O2 leaves for arrays the GPU keeps in
    registers once unrolled; arrays indexed at run time are reported instead (Trace.stack_arrays)."""
    return sum(v for k, v in instructions.items() if k != "mem_private")


def model(traces, chip: Chip, threads_per_group: int) -> Modelled:
    """The model of one launch or a sequence of launches (times add up)."""
    traces = traces if isinstance(traces, (list, tuple)) else [traces]
    terms_total = {"dram": 0.0, "l1": 0.0, "issue": 0.0, "threadgroup": 0.0}
    seconds = 0.0
    dram = lines = instances = simd = lane = 0.0
    occupancy = 1.0
    arrays = 0
    for tr in traces:
        cycle = 1.0 / (chip.ghz * 1e9)
        busiest = math.ceil(tr.groups_total / chip.cores) * chip.cores / tr.groups_total  # whole groups per core
        mem = tr.memory
        acc_lines = mem["device"]["lines"] + mem["constant"]["lines"]
        tg = mem["threadgroup"]
        terms = {
            "dram": tr.dram_bytes / (chip.dram_gbs * 1e9),
            "l1": acc_lines / (chip.cores * chip.l1_lines_per_cycle) * cycle * busiest,
            "issue": issued(tr.simd_instructions) / (chip.cores * chip.schedulers) * cycle * busiest,
            "threadgroup": max(tg["instances"], tg["bytes_used"] / chip.threadgroup_bytes_per_cycle)
            / chip.cores * cycle * busiest,
        }
        t = max(terms.values())
        seconds += t
        for k, v in terms.items():
            terms_total[k] += v
        dram += tr.dram_bytes
        lines += mem["device"]["lines"]
        instances += mem["device"]["instances"]
        simd += issued(tr.simd_instructions)
        lane += issued(tr.lane_instructions)
        by_tg = (chip.threadgroup_kb_per_core * 1024 // tr.threadgroup_bytes) if tr.threadgroup_bytes else 10**9
        groups = min(by_tg, chip.threads_per_core // max(threads_per_group, 1), math.ceil(tr.groups_total / chip.cores))
        sgs = groups * -(-threads_per_group // 32)
        occupancy = min(occupancy, sgs / chip.simdgroups_full_alu)
        arrays += len(tr.stack_arrays)
    limiter = max(terms_total, key=terms_total.get)
    return Modelled(terms_total, seconds, limiter, dram, terms_total["dram"] / seconds if seconds else 0.0,
                    lines / instances if instances else 0.0, simd, lane, occupancy, arrays,
                    sum(t.groups_total for t in traces), sum(t.groups_traced for t in traces))


# ---- our kernels ------------------------------------------------------------------------------------------

def _blocks(qtype: str, n: int, k: int, rng) -> np.ndarray:
    """(n, bytes per row) random blocks with finite scales (the values do not change what is read)."""
    from gguf_dequant import testing
    from gguf_dequant.types import BY_NAME

    t = BY_NAME[qtype]
    return testing.random_blocks(qtype, n * (k // t.block_elems), rng).reshape(n, -1)


def traced(launch: Launch, groups_traced: int | None):
    return msl_harness.dispatch_all([launch], trace=True, groups_traced=groups_traced)[0].trace


def modelled(launch: Launch, groups_traced: int | None, chips) -> dict:
    """One of our launches traced once and modelled on each chip: {chip name: Modelled}."""
    trace = traced(launch, groups_traced)
    return {c.name: model(trace, c, launch.threads_per_group) for c in chips}


def ours_linear(qtype: str, w: np.ndarray, x: np.ndarray) -> Launch:
    """mul_mv / mul_mm with f32 x and f32 output, as launch.matmul_grid describes the launch."""
    from gguf_dequant import launch

    from .msl_harness import kernel_file

    m, k = x.shape
    n = w.shape[0]
    kind, groups, group = launch.matmul_grid(m, n, qtype=qtype)
    return Launch(kernel_file(qtype), {}, f"mul_{kind}_{qtype.lower()}_f32_f32",
                  [w.reshape(-1), x, np.zeros(1, np.float32), np.empty((m, n), np.float32), np.uint64(k),
                   np.uint64(n), np.uint64(m), np.uint64(0)], tuple(groups) + (1,), (group, 1, 1))


def ours_mul_mat_id(qtype: str, w3: np.ndarray, x: np.ndarray, ids: np.ndarray,
                    groups_traced: int | None) -> list:
    """Traces of mul_mv_id, or of mul_mm_id_map then mul_mm_id (its map fed forward; the second sampled),
    with one x row per token (Ux = 1), and their threads per group."""
    from gguf_dequant import launch

    from .msl_harness import kernel_file

    e, n, _ = w3.shape
    t, u = ids.shape
    k = x.shape[-1]
    kind, groups, group = launch.mul_mat_id_grid(t, u, n, e)
    buffers = [w3.reshape(-1), x, ids.astype(np.int32), np.empty((t, u, n), np.float32)]
    scalars = [k, n, e, u, 1]
    host = f"mul_{kind}_{qtype.lower()}_f32"
    if kind == "mv_id":
        launches = [Launch(kernel_file(qtype), {}, host, buffers + [*map(np.uint64, scalars)], tuple(groups),
                           (group, 1, 1))]
    else:  # the map's outputs (buffers 3 and 4) feed mul_mm_id, which also reads buffer 3
        map_groups, map_group, words = launch.mul_mat_id_map_grid(t, u, e)
        buffers += [np.empty(words, np.uint32), *map(np.uint64, scalars + [t * u])]
        launches = [Launch(kernel_file(qtype), {}, f"mul_mm_id_map_{qtype.lower()}", buffers, (map_groups, 1, 1),
                           (map_group, 1, 1)),
                    Launch(kernel_file(qtype), {}, host, buffers, tuple(groups), (group, 1, 1),
                           feeds={3: (0, 3), 4: (0, 4)}, inout=(3,))]
    results = msl_harness.dispatch_all(launches, trace=True, groups_traced=groups_traced)
    return [(res.trace, la.threads_per_group) for res, la in zip(results, launches)]


def ours_dequantize(qtype: str, raw: np.ndarray, out_dtype=np.float16) -> Launch:
    from gguf_dequant import launch
    from gguf_dequant.types import BY_NAME

    from .msl_harness import kernel_file

    t = BY_NAME[qtype]
    n = raw.size // t.block_bytes * t.block_elems
    threads, group = launch.grid(qtype, n)
    suffix = {np.float32: "f32", np.float16: "f16", np.uint16: "bf16"}[out_dtype]
    return Launch(kernel_file(qtype), {}, f"dequantize_{qtype.lower()}_{suffix}",
                  [raw.reshape(-1), np.empty(n, out_dtype), np.uint64(n)], (-(-threads // group), 1, 1),
                  (group, 1, 1))


# ---- llama.cpp's kernels (harness/llama_metal.py) -----------------------------------------------------------

def llama_traces(op: str, *args, groups_traced: int | None):
    """Traces of llama.cpp's launches for one op (``mul_mat`` and ``mul_mat_id``, which pick the kernels
    llama.cpp's host code picks, or ``mul_mv``, ``get_rows``, ...; harness/llama_metal.py), with their threads
    per group. Launches before the
    last run whole (their outputs feed the next); the last is sampled (so its output is partly unwritten)."""
    from . import llama_metal

    launches = getattr(llama_metal, op)(*args)
    results = msl_harness.dispatch_all(launches, trace=True, groups_traced=groups_traced)
    return [(res.trace, la.threads_per_group) for res, la in zip(results, launches)]


def modelled_llama(op: str, *args, groups_traced: int | None, chips) -> dict:
    """llama.cpp's launches for one op (llama_traces) modelled on each chip, their times added: {chip name:
    Modelled}."""
    traces = llama_traces(op, *args, groups_traced=groups_traced)
    return {c.name: _combine([model(t, c, th) for t, th in traces]) for c in chips}


def _combine(parts: list[Modelled]) -> Modelled:
    if len(parts) == 1:
        return parts[0]
    seconds = sum(p.seconds for p in parts)
    terms = {k: sum(p.terms[k] for p in parts) for k in parts[0].terms}
    main = max(parts, key=lambda p: p.seconds)
    dram = sum(p.dram_bytes for p in parts)
    return dataclasses.replace(main, terms=terms, seconds=seconds, dram_bytes=dram,
                               dram_fraction=terms["dram"] / seconds, simd_instructions=sum(p.simd_instructions for p in parts),
                               lane_instructions=sum(p.lane_instructions for p in parts),
                               groups=sum(p.groups for p in parts), groups_traced=sum(p.groups_traced for p in parts))


def llama_available() -> str | None:
    """None when llama.cpp's Metal sources and harness/llama_metal.py are there, else why not."""
    try:
        from . import llama_metal
    except ImportError as e:
        return f"harness/llama_metal.py: {e}"
    return llama_metal.why_unavailable()


# ---- the report ---------------------------------------------------------------------------------------------

MV_TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "MXFP4", "F16", "BF16", "Q3_K", "IQ2_XXS",
            "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M")
SHAPES = ((4096, 4096), (14336, 4096))
ROWS = (1, 2, 4, 8, 32, 512)
DEQUANT_TYPES = ("Q4_K", "Q8_0", "Q6_K", "IQ4_XS")
MOE = dict(experts=128, used=8, k=2048, n=768)
LLAMA2_7B = {"layers": 32, "mats": [((4096, 4096), 4), ((11008, 4096), 2), ((4096, 11008), 1)],
             "output": (32000, 4096)}
PUBLISHED = {"Q4_0": 0.58, "Q8_0": 0.715}  # M2 Max, whole model, speed.md section 4 (llama.cpp discussion 4167)


def groups_for(m: int) -> int:
    return 16 if m <= 8 else (8 if m <= 32 else 4)


def _fmt(r: Modelled | None, weight_bytes: float, chip: Chip) -> list[str]:
    if r is None:
        return ["–"] * 6
    return [f"{r.seconds * 1e6:.1f}", f"{weight_bytes / r.seconds / 1e9:.0f}", f"{100 * r.dram_fraction:.0f}%",
            r.limiter + (", stack arrays" if r.stack_arrays else "") + (f", occupancy {100 * r.occupancy:.0f}%"
                                                                         if r.occupancy < 1 else ""),
            f"{r.lines_per_access:.1f}",
            f"{r.lane_instructions / weight_bytes:.2f}"]


def report(chips: list[Chip], quick: bool, log=print, types=None, rows=None, shapes=None) -> str:
    from gguf_dequant.types import BY_NAME

    rng = np.random.default_rng(0)
    why = llama_available()
    main = chips[0]
    lines = []
    results = {}  # (type, N, K, M) -> (ours, llama)
    shapes = shapes or (SHAPES[:1] if quick else SHAPES)
    rows = rows or ((1, 8) if quick else ROWS)
    types = types or (MV_TYPES[:3] if quick else MV_TYPES)
    for n, k in shapes:
        for qtype in types:
            w = _blocks(qtype, n, k, rng)
            for m in rows:
                x = rng.standard_normal((m, k)).astype(np.float32)
                gt = groups_for(m)
                start = time.time()
                ours = modelled(ours_linear(qtype, w, x), gt, chips)
                llama = None
                if why is None:
                    try:
                        llama = modelled_llama("mul_mat", qtype, w, x, groups_traced=gt, chips=chips)
                    except Exception as e:  # noqa: BLE001 - a kernel llama.cpp lacks for this shape: say so
                        log(f"  llama.cpp mul_mat {qtype} M={m}: {e}")
                results[(qtype, n, k, m)] = (ours, llama)
                log(f"{qtype} {n}x{k} M={m}: ours {ours[main.name].seconds * 1e6:.1f} us "
                    f"({ours[main.name].limiter}), llama.cpp "
                    f"{'–' if llama is None else f'{llama[main.name].seconds * 1e6:.1f} us ({llama[main.name].limiter})'}"
                    f" [{time.time() - start:.1f} s]")
    header = ["type", "N x K", "M", "ours µs", "ours GB/s", "ours % peak", "ours limiter", "ours lines/access",
              "ours instr/weight byte", "llama µs", "llama GB/s", "llama % peak", "llama limiter", "llama lines/access",
              "llama instr/weight byte", "ours / llama speed"]
    lines.append(f"## Compute on packed weights, {main.name} (f32 x, f32 out)\n")
    lines.append("GB/s and % of peak count the weight bytes and the unique DRAM bytes per modelled time; instr/weight "
                 "byte = instructions summed over lanes per byte of weights.\n")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for (qtype, n, k, m), (ours, llama) in results.items():
        wb = n * k * BY_NAME[qtype].block_bytes / BY_NAME[qtype].block_elems
        o, ll = ours[main.name], (llama or {}).get(main.name)
        speed = f"{ll.seconds / o.seconds:.2f}x" if ll else "–"
        lines.append("| " + " | ".join([qtype, f"{n} x {k}", str(m), *_fmt(o, wb, main), *_fmt(ll, wb, main), speed])
                     + " |")
    for chip in chips[1:]:
        lines.append(f"\n### {chip.name}: modelled % of DRAM peak, ours / llama.cpp\n")
        lines.append("| type | N x K | M | ours | llama.cpp | ours / llama speed |")
        lines.append("|---|---|---|---|---|---|")
        for (qtype, n, k, m), (ours, llama) in results.items():
            o, ll = ours[chip.name], (llama or {}).get(chip.name)
            lines.append(f"| {qtype} | {n} x {k} | {m} | {100 * o.dram_fraction:.0f}% ({o.limiter}) | "
                         + (f"{100 * ll.dram_fraction:.0f}% ({ll.limiter}) | {ll.seconds / o.seconds:.2f}x |"
                            if ll else "– | – |"))
    return "\n".join(lines), results


def report_moe_dequant_calibration(chips: list[Chip], quick: bool, log=print) -> str:
    rng = np.random.default_rng(1)
    main = chips[0]
    why = llama_available()
    out = []
    # mixture of experts, Qwen3-30B-A3B-like layer
    e, u, k, n = MOE["experts"], MOE["used"], MOE["k"], MOE["n"]
    out.append(f"\n## mul_mat_id, {e} experts, {u} per token, K = {k}, N = {n} (Qwen3-30B-A3B-like), {main.name}\n")
    out.append("| type | T | ours µs | ours limiter | ours weight bytes read / used experts' | llama µs | llama limiter | "
               "llama weight bytes read / used | ours / llama speed |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for qtype in ("Q4_K",) if quick else ("Q4_K", "Q8_0"):
        w3 = _blocks(qtype, e * n, k, rng).reshape(e, n, -1)
        for t in ((1,) if quick else (1, 512)):
            ids = np.stack([rng.choice(e, u, replace=False) for _ in range(t)]).astype(np.int32)
            x = rng.standard_normal((t, k)).astype(np.float32)
            used = len(np.unique(ids)) * w3[0].nbytes
            start = time.time()
            # Most of a T = 512 grid's groups are idle (windows past an expert's slots), so a few evenly spread
            # samples land on one or two busy groups and swing the time by up to 1.8x: trace many.
            sampled = 16 if t == 1 else 512
            trs = ours_mul_mat_id(qtype, w3, x, ids, sampled)
            o = _combine([model(a, main, th) for a, th in trs])
            ours_read = sum(max(r for r, _ in a.dram.values()) for a, _ in trs)  # the weights: the most read
            ll, llama_read = None, None
            if why is None:
                try:
                    trs = llama_traces("mul_mat_id", qtype, w3, x, ids, groups_traced=sampled)
                    ll = _combine([model(a, main, th) for a, th in trs])
                    llama_read = sum(max(r for r, _ in a.dram.values()) for a, _ in trs)
                except Exception as ex:  # noqa: BLE001
                    log(f"  llama.cpp mul_mat_id {qtype} T={t}: {ex}")
            log(f"mul_mat_id {qtype} T={t}: ours {o.seconds * 1e6:.1f} us [{time.time() - start:.1f} s]")
            out.append(f"| {qtype} | {t} | {o.seconds * 1e6:.1f} | {o.limiter} | {ours_read / used:.2f} | "
                       + (f"{ll.seconds * 1e6:.1f} | {ll.limiter} | {llama_read / used:.2f} | {ll.seconds / o.seconds:.2f}x |"
                          if ll else "– | – | – | – |"))
    # dequantize against get_rows
    n, k = 4096, 4096
    out.append(f"\n## Dequantize {n} x {k}, ours (to f32 and f16) against llama.cpp's kernel_get_rows (f32), {main.name}\n")
    out.append("| type | ours f32 µs | ours f32 % peak | ours f16 µs | ours f16 % peak | ours limiter | "
               "store lines/access | get_rows µs | get_rows % peak | get_rows limiter |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for qtype in DEQUANT_TYPES[:1] if quick else DEQUANT_TYPES:
        raw = _blocks(qtype, n, k, rng)
        res = {}
        for dt in (np.float32, np.float16):
            res[dt] = modelled(ours_dequantize(qtype, raw, dt), 32, [main])[main.name]
        ll = None
        if why is None:
            try:
                ll = modelled_llama("get_rows", qtype, raw, np.arange(n, dtype=np.int32), groups_traced=32,
                                    chips=[main])[main.name]
            except Exception as ex:  # noqa: BLE001
                log(f"  llama.cpp get_rows {qtype}: {ex}")
        f32, f16 = res[np.float32], res[np.float16]
        out.append(f"| {qtype} | {f32.seconds * 1e6:.1f} | {100 * f32.dram_fraction:.0f}% | {f16.seconds * 1e6:.1f} | "
                   f"{100 * f16.dram_fraction:.0f}% | {f32.limiter} | {f32.lines_per_access:.1f} | "
                   + (f"{ll.seconds * 1e6:.1f} | {100 * ll.dram_fraction:.0f}% | {ll.limiter} |" if ll else "– | – | – |"))
    # calibration
    out.append(f"\n## Calibration: llama.cpp's mat-vec on Llama-2-7B's shapes, {main.name}\n")
    if why is not None:
        out.append(f"Not run: {why}\n")
        return "\n".join(out)
    out.append("Per token: 32 layers of 4 x (4096 x 4096), 2 x (11008 x 4096), 1 x (4096 x 11008), plus the 32000 x 4096 "
               "output; modelled bandwidth = weight bytes / summed modelled time, against the published whole-model "
               "figure (llama.cpp discussion 4167; other ops and launch gaps included there, so it is a lower bound "
               "on the kernel).\n")
    out.append("| type | modelled ms / token | modelled GB/s | modelled % of peak | published % of peak | model / published |")
    out.append("|---|---|---|---|---|---|")
    for qtype in ("Q4_0",) if quick else ("Q4_0", "Q8_0"):
        total_s = total_b = 0.0
        mats = [(s, c * LLAMA2_7B["layers"]) for s, c in LLAMA2_7B["mats"]] + [(LLAMA2_7B["output"], 1)]
        for (nn, kk), count in (mats[:1] if quick else mats):
            w = _blocks(qtype, nn, kk, rng)
            x = rng.standard_normal((1, kk)).astype(np.float32)
            r = modelled_llama("mul_mv", qtype, w, x, groups_traced=16, chips=[main])[main.name]
            total_s += r.seconds * count
            total_b += w.nbytes * count
        frac = total_b / total_s / (main.dram_gbs * 1e9)
        out.append(f"| {qtype} | {total_s * 1e3:.2f} | {total_b / total_s / 1e9:.0f} | {100 * frac:.0f}% | "
                   f"{100 * PUBLISHED[qtype]:.0f}% | {frac / PUBLISHED[qtype]:.2f} |")
    return "\n".join(out)


def chart(results: dict, chip: Chip, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in results if k[1] == SHAPES[0][0] and k[3] == 1]
    if not keys:
        return
    labels = [k[0] for k in keys]
    ours = [100 * results[k][0][chip.name].dram_fraction for k in keys]
    llama = [100 * results[k][1][chip.name].dram_fraction if results[k][1] else 0 for k in keys]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = np.arange(len(keys))
    ax.bar(xs - 0.2, ours, 0.4, label="ours (mul_mv)")
    ax.bar(xs + 0.2, llama, 0.4, label="llama.cpp (kernel_mul_mv)")
    ax.set_xticks(xs, labels)
    ax.set_ylabel("% of DRAM peak (modelled)")
    ax.set_title(f"Mat-vec 4096 x 4096, M = 1, {chip.name}: the harness model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.perf", description=__doc__.split("\n")[0])
    ap.add_argument("--chip", action="append", choices=sorted(CHIPS), help="default: M2 Max, M3 Max, M4 Max")
    ap.add_argument("--quick", action="store_true", help="a few rows only (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "METAL_MODEL.md")
    ap.add_argument("--types", nargs="+", help=f"mat-vec types (default: {' '.join(MV_TYPES)})")
    ap.add_argument("--rows", nargs="+", type=int, help=f"values of M (default: {' '.join(map(str, ROWS))})")
    ap.add_argument("--matmul-only", action="store_true", help="skip mul_mat_id, dequantize and the calibration")
    args = ap.parse_args(argv)
    if not msl_harness.available():
        print(f"{msl_harness.CLANG} not found", file=sys.stderr)
        return 2
    chips = [CHIPS[c] for c in (args.chip or ["M2 Max", "M3 Max", "M4 Max"])]
    start = time.time()
    table, results = report(chips, args.quick, types=args.types, rows=args.rows)
    rest = "" if args.matmul_only else report_moe_dequant_calibration(chips, args.quick)
    png = args.out.with_suffix(".png")
    chart(results, chips[0], png)
    why = llama_available()
    head = [
        "# The Metal performance model: ours against llama.cpp's kernels\n",
        f"Generated by `{' '.join(['python -m harness.perf', *(argv if argv is not None else sys.argv[1:])])}` on {time.strftime('%Y-%m-%d')} "
        f"({platform.machine()}, load average {os.getloadavg()[0]:.1f}; {time.time() - start:.0f} s). Modelled, not "
        "measured: no Apple GPU ran. The model (harness/perf.py) counts what each launch asks of the GPU in the Linux "
        "harness (harness/trace.py: every device/constant/threadgroup access matched across the 32 lanes of its "
        "simdgroup, unique DRAM bytes, executed instructions by class from basic-block counts) and takes the largest "
        "of DRAM, L1, issue and threadgroup-memory time. Big launches trace a sample of their threadgroups (16 at "
        "M <= 8, 8 at M = 32, 4 at M = 512, 512 for mul_mat_id at T = 512; spread evenly over the grid) and "
        "extrapolate.\n",
        "Chips: " + "; ".join(f"{c.name} {c.cores} cores at {c.ghz} GHz, {c.dram_gbs:.0f} GB/s" for c in chips) + ".\n",
        "llama.cpp: " + ("its own Metal kernels (`ggml-metal/kernels/*.metal` of llama-cpp-python 0.3.36), run in the "
                         "harness with only the scripted edits of harness/llama_metal.py and its host code's geometry."
                         if why is None else f"not run ({why}).")
        + "\n",
        f"![modelled % of DRAM peak]({png.name})\n",
    ]
    args.out.write_text("\n".join(head) + "\n" + table + "\n" + rest + "\n")
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
