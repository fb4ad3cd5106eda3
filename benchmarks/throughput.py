"""CPU throughput of every type, per core and on all cores, written to benchmarks/RESULTS.md.

    python benchmarks/throughput.py [--elements N] [--all-core-elements N] [--repeat R] [--types Q4_K,Q6_K]
                                    [--output FILE]

Per core (one thread each side: torch.set_num_threads(1), llama.cpp's single-threaded ``to_float``): for each
type, random blocks (finite scales) are dequantized by ggml's ``to_float`` (float32) and by the compiled CPU
backend of the Hub package (float32, float16, bfloat16 output), interleaved call by call in one process into
warm output buffers, R times; the table gives median element rates and the median of the per-round ratios
(so a burst of load from other processes hits both sides of a ratio alike), with its interquartile spread.
The pure-torch reference and gguf-py (given the fast ``(rows, row_bytes)`` layout) are timed the same way,
for context. All cores: the CPU backend with every thread, against a torch ``fill_`` of the same output
buffer (the write bandwidth), interleaved likewise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import torch

from gguf_dequant import reference, testing
from gguf_dequant.types import SUPPORTED, resolve

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ROW_ELEMS = 4096
GOAL_TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")  # the all-core bandwidth goal (issue 10)


def interleaved(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn `repeat` times. Each timed call directly follows an
    untimed one of the same function, so its output buffer is warm (in cache when it fits) on every side,
    whatever the other functions of the round evicted."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            fn()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} logical cores{mem}; {platform.system()} {platform.machine()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
            f"gguf {getattr(gguf, '__version__', '0.19.0')}")


def load_cpu_backend():
    try:
        import kernels

        from gguf_dequant import local_build

        if (ROOT / "build" / local_build.variant_name() / "metadata.json").exists():
            return kernels.get_local_kernel(ROOT, backend="cpu")
    except Exception as e:  # noqa: BLE001 - the columns are left empty with the reason printed
        print(f"CPU backend unavailable: {e}", file=sys.stderr)
    return None


def load_ggml():
    try:
        from gguf_dequant.oracles import ggml

        if ggml.available():
            return ggml
        print(f"ggml oracle unavailable: {ggml.why_unavailable()}", file=sys.stderr)
    except ImportError as e:
        print(f"ggml oracle unavailable: {e}", file=sys.stderr)
    return None


def blocks(name: str, n_elements: int) -> tuple[np.ndarray, int]:
    t = resolve(name)
    n = max(ROW_ELEMS, n_elements - n_elements % ROW_ELEMS)
    raw = testing.random_blocks(t, n // t.block_elems, np.random.default_rng(0)).reshape(n // ROW_ELEMS, -1)
    return raw, n


def per_core(name: str, n_elements: int, repeat: int, cpu, ggml) -> dict:
    """One thread each side; seconds per call (medians) and per-round ratios."""
    t = resolve(name)
    raw, n = blocks(name, n_elements)
    blob = torch.from_numpy(raw)
    torch.set_num_threads(1)
    fns = {}
    if ggml is not None and name != "F32":  # ggml has no F32 to_float
        dst = np.empty(n, dtype=np.float32)
        fns["ggml"] = lambda: ggml.to_float_into(t.id, raw.ctypes.data, dst.ctypes.data, n)
    if cpu is not None:
        for key, dtype in DTYPES.items():
            o = torch.empty(raw.shape[0], ROW_ELEMS, dtype=dtype)
            fns[key] = lambda o=o, dtype=dtype: cpu.dequantize(blob, t.id, dtype, out=o)
    times = interleaved(fns, repeat)
    res: dict = {"name": name, "n": n, "med": {k: statistics.median(v) for k, v in times.items()}}
    if "ggml" in times and "f32" in times:
        res["vs_ggml"] = quartiles([g / c for g, c in zip(times["ggml"], times["f32"])])
    for key in ("f16", "bf16"):
        if key in times:
            res[f"{key}_vs_f32"] = quartiles([a / b for a, b in zip(times["f32"], times[key])])
    # Context, fewer rounds: the pure-torch reference and gguf-py (float32 output).
    slow = {}
    out = torch.empty(raw.shape[0], ROW_ELEMS)
    slow["ref"] = lambda: reference.dequantize(blob, name, out=out)
    if name not in ("Q2_0", "F32"):  # Q2_0: not in gguf-py 0.19.0; F32: gguf-py returns a view, no work
        qt = gguf.GGMLQuantizationType[name]
        try:
            gguf.quants.dequantize(raw[:1], qt)
            slow["gguf_py"] = lambda: gguf.quants.dequantize(raw, qt)
        except NotImplementedError:
            pass
    res["med"].update({k: statistics.median(v) for k, v in interleaved(slow, 3).items()})
    return res


def all_cores(name: str, n_elements: int, repeat: int, cpu, threads: int) -> dict:
    """Every thread: the CPU backend and a fill_ of the same output buffer, interleaved."""
    t = resolve(name)
    raw, n = blocks(name, n_elements)
    blob = torch.from_numpy(raw)
    torch.set_num_threads(threads)
    fns = {}
    for key, dtype in DTYPES.items():
        o = torch.empty(raw.shape[0], ROW_ELEMS, dtype=dtype)
        fns[key] = lambda o=o, dtype=dtype: cpu.dequantize(blob, t.id, dtype, out=o)
        fns[f"fill_{key}"] = lambda o=o: o.fill_(1.0)
    times = interleaved(fns, repeat)
    return {"name": name, "n": n, "med": {k: statistics.median(v) for k, v in times.items()},
            "best": {k: min(v) for k, v in times.items()}}


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def rate(n: int, seconds: float | None) -> float | None:
    """Giga-elements per second."""
    return None if seconds is None else n / seconds / 1e9


def ratio_cell(q) -> str:
    if q is None:
        return "–"
    lo, med, hi = q
    return f"{med:.2f}x ({lo:.2f}–{hi:.2f})"


def render(core: list[dict], allc: list[dict], args, threads: int, load: tuple[float, float]) -> str:
    lines = [
        "# Throughput on the CPU",
        "",
        f"Generated by `python benchmarks/throughput.py` on {datetime.date.today().isoformat()}. Load average "
        f"(1 min) of the machine at the start and end of the run: {load[0]:.1f}, {load[1]:.1f} (on "
        f"{os.cpu_count()} cores; the benchmark adds about 1: much more means other processes share the cores, "
        "and the all-core figures then mostly measure the scheduler).",
        "",
        f"Machine: {machine()}. The CPU backend runs its AVX-512 build here (chosen at run time; "
        "`GGUF_DEQUANT_CPU_ISA=avx2|baseline` caps it). Random blocks with finite scales; warm output buffers "
        "on every side; Ge/s = 10^9 output elements per second.",
        "",
        "## Per core (1 thread each side)",
        "",
        f"{core[0]['n'] if core else 0:,} elements per type. ggml = llama.cpp's single-threaded `to_float` "
        "(float32 output, the oracle library built by `tools/build_ggml.sh`: `-O3`, no `-march`); cpu = this "
        "package's CPU backend with `torch.set_num_threads(1)`, called through the Python API (about 20 µs per "
        f"call included). {args.repeat} interleaved rounds (ggml, cpu f32, cpu f16, cpu bf16 in turn, each "
        "timed call right after an untimed one into the same buffer, so outputs are warm); rates are medians, ratios the median of the per-round ratios with their interquartile range in brackets "
        "(the spread shows how much the machine's load moved them). reference (pure torch, 1 thread) and "
        "gguf-py (numpy) are float32 output, median of 3, for context.",
        "",
        "| type | ggml Ge/s | cpu f32 Ge/s | **cpu f32 / ggml** | cpu f16 Ge/s | **f16 / f32** | cpu bf16 Ge/s "
        "| **bf16 / f32** | reference Ge/s | gguf-py Ge/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in core:
        n, m = r["n"], r["med"]
        lines.append(
            f"| {r['name']} | {fmt(rate(n, m.get('ggml')))} | {fmt(rate(n, m.get('f32')))} | "
            f"{ratio_cell(r.get('vs_ggml'))} | {fmt(rate(n, m.get('f16')))} | {ratio_cell(r.get('f16_vs_f32'))} | "
            f"{fmt(rate(n, m.get('bf16')))} | {ratio_cell(r.get('bf16_vs_f32'))} | {fmt(rate(n, m.get('ref')))} | "
            f"{fmt(rate(n, m.get('gguf_py')))} |")
    lines += [
        "",
        f"## All cores ({threads} threads)",
        "",
        f"{allc[0]['n'] if allc else 0:,} elements per type, {args.repeat} interleaved rounds of the CPU backend "
        "(f32, f16, bf16) and a torch `fill_` of the same output buffer with the same threads (the write "
        "bandwidth, BW); medians, and in brackets the same from each side's best round (when other processes "
        "take the cores, a parallel call waits for a time slice and the medians of both sides collapse to it). "
        "The goal types of issue 10 are in bold.",
        "",
        "| type | cpu f32 Ge/s | f32 GB/s | % of f32 BW | cpu f16 Ge/s | % of f16 BW | cpu bf16 Ge/s "
        "| bf16 GB/s | % of bf16 BW | f16 / f32 | bf16 / f32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in allc:
        n, m, b = r["n"], r["med"], r["best"]
        f32, f16, bf16 = (rate(n, m[k]) for k in ("f32", "f16", "bf16"))
        pct = {k: f"{100 * m[f'fill_{k}'] / m[k]:.0f}% ({100 * b[f'fill_{k}'] / b[k]:.0f}%)" for k in DTYPES}
        name = f"**{r['name']}**" if r["name"] in GOAL_TYPES else r["name"]
        lines.append(
            f"| {name} | {f32:.2f} | {4 * f32:.1f} | {pct['f32']} | {f16:.2f} | {pct['f16']} | {bf16:.2f} "
            f"| {2 * bf16:.1f} | {pct['bf16']} | {f16 / f32:.2f}x | {bf16 / f32:.2f}x |")
    if allc:
        m = allc[0]["med"]
        n = allc[0]["n"]
        lines += ["", "Write bandwidth (`fill_` in the first type's rounds, median and best): "
                  + ", ".join(f"{k} {n * DTYPES[k].itemsize / m[f'fill_{k}'] / 1e9:.1f} "
                              f"({n * DTYPES[k].itemsize / allc[0]['best'][f'fill_{k}'] / 1e9:.1f}) GB/s"
                              for k in DTYPES) + "."]
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=1 << 22, help="elements per type, per core (default 4M)")
    ap.add_argument("--all-core-elements", type=int, default=1 << 26,
                    help="elements per type, all cores (default 64M: outputs far larger than the caches, and calls "
                         "long enough that a scheduler time slice does not dominate them)")
    ap.add_argument("--repeat", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--types", default=",".join(t.name for t in SUPPORTED.values()))
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = ap.parse_args(argv)
    names = [resolve(n).name for n in args.types.split(",") if n]
    cpu, ggml = load_cpu_backend(), load_ggml()
    if cpu is None:
        print("no local build of the CPU backend: run python -m gguf_dequant.local_build", file=sys.stderr)
        return 1
    threads = os.cpu_count() or 1
    # glibc's malloc adapts its mmap/trim thresholds to the first large frees; until then the reference's
    # chunk temporaries are page-faulted in on every call. Measure the steady state.
    for _ in range(3):
        raw, _n = blocks("Q4_K", args.elements)
        reference.dequantize(torch.from_numpy(raw), "Q4_K")
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    core, allc = [], []
    for name in names:
        r = per_core(name, args.elements, args.repeat, cpu, ggml)
        core.append(r)
        a = all_cores(name, args.all_core_elements, args.repeat, cpu, threads)
        allc.append(a)
        q = r.get("vs_ggml")
        print(f"{name:8s} per core: cpu f32 / ggml {fmt(q and q[1])}x, f16 / f32 {fmt(r['f16_vs_f32'][1])}, "
              f"bf16 / f32 {fmt(r['bf16_vs_f32'][1])}; all cores: f32 {100 * a['med']['fill_f32'] / a['med']['f32']:.0f}%"
              f" of BW, bf16 {100 * a['med']['fill_bf16'] / a['med']['bf16']:.0f}% (best rounds: "
              f"{100 * a['best']['fill_f32'] / a['best']['f32']:.0f}%, {100 * a['best']['fill_bf16'] / a['best']['bf16']:.0f}%)",
              flush=True)
    torch.set_num_threads(threads)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    args.output.write_text(render(core, allc, args, threads, (load_start, load_end)))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
