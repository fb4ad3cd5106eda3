"""CPU throughput of every type, all paths in one run, written to benchmarks/RESULTS.md.

    python benchmarks/throughput.py [--elements N] [--repeat R] [--types Q4_K,Q6_K] [--output FILE]

For each type, ~16M elements of random blocks (finite scales) are dequantized by: the pure-torch
reference (float32 output), gguf-py (given the fast (rows, row_bytes) layout), ggml's single-thread
``to_float`` (llama.cpp's C code, when the oracle library is built) and the compiled CPU backend of the
Hub package (float32, float16, bfloat16 output; when the local build exists). Throughput is bytes of
output per second; the write bandwidth row is a torch ``fill_`` of the same output size. Best of R runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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


def best_of(fn, repeat: int) -> float:
    fn()  # warm up (allocations, caches, lazy tables)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"numpy {np.__version__}, gguf {getattr(gguf, '__version__', '0.19.0')}")


def load_cpu_backend():
    try:
        import kernels

        from gguf_dequant import local_build

        if (ROOT / "build" / local_build.variant_name() / "metadata.json").exists():
            return kernels.get_local_kernel(ROOT, backend="cpu")
    except Exception as e:  # noqa: BLE001 - the column is left empty with the reason printed
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


def gbps(nbytes: int, seconds: float | None) -> float | None:
    return None if seconds is None else nbytes / seconds / 1e9


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def bench_type(name: str, n_elements: int, repeat: int, cpu, ggml) -> dict:
    t = resolve(name)
    row_elems = 4096
    n_elements -= n_elements % row_elems
    rows = n_elements // row_elems
    raw = testing.random_blocks(t, n_elements // t.block_elems, np.random.default_rng(0)).reshape(rows, -1)
    blob = torch.from_numpy(raw)
    out_bytes = n_elements * 4
    res: dict = {"name": name, "n": n_elements}

    out = torch.empty(rows, row_elems)
    res["ref"] = best_of(lambda: reference.dequantize(blob, name, out=out), repeat)

    if name not in ("Q2_0", "F32"):  # Q2_0: not in gguf-py 0.19.0; F32: gguf-py returns a view, no work
        qt = gguf.GGMLQuantizationType[name]
        try:
            res["gguf_py"] = best_of(lambda: gguf.quants.dequantize(raw, qt), max(1, repeat // 2))
        except NotImplementedError:
            pass

    if ggml is not None and name != "F32":  # ggml has no F32 to_float
        dst = np.empty(n_elements, dtype=np.float32)
        src_ptr, dst_ptr = raw.ctypes.data, dst.ctypes.data
        res["ggml"] = best_of(lambda: ggml.to_float_into(t.id, src_ptr, dst_ptr, n_elements), repeat)

    if cpu is not None:
        for key, dtype in DTYPES.items():
            o = torch.empty(rows, row_elems, dtype=dtype)
            res[f"cpu_{key}"] = best_of(lambda: cpu.dequantize(blob, t.id, dtype, out=o), repeat)
    res["out_bytes"] = out_bytes
    return res


def write_bandwidth(n_elements: int, repeat: int) -> dict:
    result = {}
    for key, dtype in DTYPES.items():
        o = torch.empty(n_elements, dtype=dtype)
        result[key] = gbps(o.numel() * o.element_size(), best_of(lambda: o.fill_(1.0), repeat))
    return result


def render(results: list[dict], bw: dict, args, cpu_available: bool, ggml_available: bool) -> str:
    lines = [
        "# Throughput on the CPU",
        "",
        f"Generated by `python benchmarks/throughput.py` on {datetime.date.today().isoformat()}.",
        "",
        f"Machine: {machine()}. A shared 2-core VM: figures vary by about +-30% from run to run (the output "
        "buffers are warm, so caches count too); compare within one run.",
        "",
        f"Each type: {results[0]['n'] if results else 0:,} elements of random blocks (finite scales), best of "
        f"{args.repeat} runs after a warm-up (and a process-wide warm-up, so glibc's malloc has settled its "
        "thresholds: the reference's very first large call in a fresh process can be ~4x slower). GB/s = bytes of **output** per second (float32 output = 4 bytes "
        "per element unless the column says f16/bf16 = 2 bytes). gguf-py gets the fast `(rows, row_bytes)` layout "
        "(rows of 4096 elements; for F32 it returns a view, so no figure). ggml = llama.cpp's `to_float`, single thread"
        + ("" if ggml_available else " (oracle not built: column empty)")
        + ". cpu = this package's compiled CPU backend (all cores)"
        + ("" if cpu_available else " (no local build: columns empty)") + ".",
        "",
        f"Write bandwidth (torch `fill_` of the same size, all cores): f32 {fmt(bw['f32'])} GB/s, "
        f"f16 {fmt(bw['f16'])} GB/s, bf16 {fmt(bw['bf16'])} GB/s.",
        "",
        "| type | reference GB/s | gguf-py GB/s | ggml GB/s | cpu f32 GB/s | cpu f16 GB/s | cpu bf16 GB/s "
        "| ref / gguf-py | ref / ggml | cpu f32 / ggml | cpu f32 / write BW |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        n = r["n"]
        ref = gbps(4 * n, r.get("ref"))
        py = gbps(4 * n, r.get("gguf_py"))
        gg = gbps(4 * n, r.get("ggml"))
        c32, c16, cb = (gbps(4 * n, r.get("cpu_f32")), gbps(2 * n, r.get("cpu_f16")), gbps(2 * n, r.get("cpu_bf16")))
        ratio = lambda a, b: None if a is None or b is None else a / b  # noqa: E731
        lines.append(
            f"| {r['name']} | {fmt(ref)} | {fmt(py)} | {fmt(gg)} | {fmt(c32)} | {fmt(c16)} | {fmt(cb)} "
            f"| {fmt(ratio(ref, py), '.1f')}x | {fmt(ratio(ref, gg), '.2f')}x | {fmt(ratio(c32, gg), '.2f')}x "
            f"| {fmt(None if c32 is None else 100 * c32 / bw['f32'], '.0f')}% |")
    lines.append("")
    return "\n".join(lines).replace("| –x |", "| – |").replace("| –% |", "| – |").replace(" –x ", " – ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=1 << 24, help="elements per type (default 16M)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--types", default=",".join(t.name for t in SUPPORTED.values()))
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = ap.parse_args(argv)
    names = [resolve(n).name for n in args.types.split(",") if n]
    cpu, ggml = load_cpu_backend(), load_ggml()
    # glibc's malloc adapts its mmap/trim thresholds to the first large frees; until then the reference's
    # chunk temporaries are page-faulted in on every call. Measure the steady state (a first call in a
    # fresh process can take ~4x longer; see RESULTS.md).
    for _ in range(3):
        bench_type("Q4_K", args.elements, 1, None, None)
    bw = write_bandwidth(args.elements, args.repeat)
    results = []
    for name in names:
        r = bench_type(name, args.elements, args.repeat, cpu, ggml)
        results.append(r)
        print(f"{name:8s} ref {fmt(gbps(4 * r['n'], r['ref']))} GB/s  gguf-py {fmt(gbps(4 * r['n'], r.get('gguf_py')))}"
              f"  ggml {fmt(gbps(4 * r['n'], r.get('ggml')))}  cpu f32 {fmt(gbps(4 * r['n'], r.get('cpu_f32')))}",
              flush=True)
    text = render(results, bw, args, cpu is not None, ggml is not None)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
