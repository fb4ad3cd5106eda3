"""CPU speed of compute on packed weights, written to benchmarks/MATMUL.md with a chart (benchmarks/matmul.png).

    python -m gguf_dequant.local_build && python benchmarks/matmul.py [--quick] [--types Q4_K,Q8_0] [--repeat R]
                                                                       [--threads T [--cpu-time]]

Weights: random blocks with finite scales (``gguf_dequant.testing.random_blocks``), shapes (N, K) = 4096 x 4096
and 14336 x 4096; activations random normal in bfloat16 and float32; all cores (``--threads`` sets torch's thread
count, and ggml's, for a machine too busy for a steady all-core figure; with ``--threads 1 --cpu-time`` times are
the process's CPU time, which leaves out the time other jobs hold the core).
Times are the best of at least R runs (and at least half a second of runs) after a warm-up. Compared, for each type and activation dtype:

- ``linear`` at M = 1 against ``F.linear`` on the same weight already dequantized to the activation dtype
  (bfloat16: what transformers' CPU path does after load); goal >= 2x faster;
- M = 8 against M = 1 (goal <= 2.5x the time) and M = 9 against M = 8 (no step: about 9/8 or less);
- llama.cpp's CPU ``ggml_mul_mat`` (libggml-cpu from ``tools/build_llama.sh``, same thread count, float32
  activations that it quantizes to 8 bits) at M = 1: ratio ggml time / our time, aim >= 0.5;
- M = 512 against dequantize (this package's CPU backend) + ``F.linear`` in bfloat16: ratio baseline time /
  our time, goal >= 0.8;
- ``mul_mat_id`` with 64 experts of 1024 x 2048, 8 per token, T = 1 and T = 32, against a loop over the routed
  experts of dequantize + matmul.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gguf_dequant import local_build, testing  # noqa: E402
from gguf_dequant.types import resolve  # noqa: E402

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "MXFP4"]
SHAPES = [(4096, 4096), (14336, 4096)]
ACTS = {"bf16": torch.bfloat16, "f32": torch.float32}
GOALS = {"m1": 2.0, "m8": 2.5, "ggml": 0.5, "m512": 0.8}


CLOCK = time.perf_counter  # time.process_time with --cpu-time


def best_of(fn, repeat: int, min_seconds: float = 0.5, max_runs: int = 400) -> float:
    """Best time in ms of at least ``repeat`` runs and at least ``min_seconds`` of runs (a busy machine leaves
    quiet moments; more short runs are more chances to time one)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_seconds and len(times) < max_runs):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times) * 1e3


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    isa = os.environ.get("GGUF_DEQUANT_CPU_ISA", "best available (AVX-512 here)")
    return (f"{cpu}, {os.cpu_count()} logical cores; {platform.system()} {platform.machine()}; Python "
            f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads); CPU matmul "
            f"build: {isa}")


class Ggml:
    """llama.cpp's CPU mul_mat through ctypes (fused.md section 2 has the call sequence)."""

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]

    def __init__(self, libdir: Path):
        mode = ctypes.RTLD_GLOBAL
        self.base = ctypes.CDLL(str(libdir / "libggml-base.so"), mode=mode)
        self.cpu = ctypes.CDLL(str(libdir / "libggml-cpu.so"), mode=mode)
        b, c = self.base, self.cpu
        b.ggml_init.restype = ctypes.c_void_p
        b.ggml_init.argtypes = [self.InitParams]
        b.ggml_free.argtypes = [ctypes.c_void_p]
        b.ggml_new_tensor_2d.restype = ctypes.c_void_p
        b.ggml_new_tensor_2d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        b.ggml_get_data.restype = ctypes.c_void_p
        b.ggml_get_data.argtypes = [ctypes.c_void_p]
        b.ggml_mul_mat.restype = ctypes.c_void_p
        b.ggml_mul_mat.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        b.ggml_new_graph.restype = ctypes.c_void_p
        b.ggml_new_graph.argtypes = [ctypes.c_void_p]
        b.ggml_build_forward_expand.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        c.ggml_graph_compute_with_ctx.restype = ctypes.c_int
        c.ggml_graph_compute_with_ctx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        c.ggml_cpu_init()

    def time_mul_mat(self, type_id: int, blocks: np.ndarray, k: int, x: np.ndarray, repeat: int) -> tuple[float, np.ndarray]:
        """(best time in ms, result (M, N) float32) of ggml_mul_mat(W, x) with float32 x (M, K)."""
        n, m = blocks.shape[0], x.shape[0]
        # Tensors + graph + one work buffer (8-bit activations) per run.
        size = blocks.nbytes + x.nbytes + 4 * m * n + (repeat + 2) * (2 * x.nbytes + (1 << 20)) + (16 << 20)
        ctx = self.base.ggml_init(self.InitParams(size, None, False))
        try:
            w = self.base.ggml_new_tensor_2d(ctx, type_id, k, n)
            xt = self.base.ggml_new_tensor_2d(ctx, 0, k, m)
            ctypes.memmove(self.base.ggml_get_data(w), blocks.ctypes.data, blocks.nbytes)
            ctypes.memmove(self.base.ggml_get_data(xt), np.ascontiguousarray(x).ctypes.data, x.nbytes)
            y = self.base.ggml_mul_mat(ctx, w, xt)
            graph = self.base.ggml_new_graph(ctx)
            self.base.ggml_build_forward_expand(graph, y)
            threads = torch.get_num_threads()
            # Exactly `repeat` timed runs: each allocates its work buffer in the context.
            t = best_of(lambda: self.cpu.ggml_graph_compute_with_ctx(ctx, graph, threads), repeat, min_seconds=0)
            out = np.ctypeslib.as_array((ctypes.c_float * (m * n)).from_address(self.base.ggml_get_data(y)))
            return t, out.reshape(m, n).copy()
        finally:
            self.base.ggml_free(ctx)


def load_ggml() -> tuple[Ggml | None, str]:
    libdir = Path(os.environ.get("LLAMA_LIBDIR", ROOT / ".cache" / "llama" / "lib"))
    where = str(libdir.relative_to(ROOT) if libdir.is_relative_to(ROOT) else libdir)
    if not (libdir / "libggml-cpu.so").exists():
        return None, f"no libggml-cpu.so in {where} (bash tools/build_llama.sh)"
    try:
        return Ggml(libdir), where
    except OSError as e:
        return None, str(e)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def mark(ratio: float | None, goal: float, higher_is_better: bool = True) -> str:
    if ratio is None:
        return "–"
    ok = ratio >= goal if higher_is_better else ratio <= goal
    return f"{ratio:.2f}{'' if ok else ' ✗'}"


def bench_linear(k, ggml, shapes, types, repeat: int, quick: bool) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n, kk in shapes:
        for name in types:
            t = resolve(name)
            raw = testing.random_blocks(name, n * kk // t.block_elems, np.random.default_rng(t.id))
            blocks = torch.from_numpy(raw.reshape(n, -1))
            ggml_ms = None
            if ggml is not None:
                x32 = torch.randn(1, kk, generator=gen)
                ggml_ms, got = ggml.time_mul_mat(t.id, raw.reshape(n, -1), kk, x32.numpy(), repeat)
                ours = k.linear(x32, blocks, t.id).numpy()
                scale = (np.abs(x32.numpy()) @ np.abs(k.dequantize(blocks, t.id).numpy()).T).max()
                assert np.abs(got - ours).max() <= 0.05 * scale, f"ggml disagrees on {name}"  # 8-bit activations
            for act, dtype in ACTS.items():
                w = k.dequantize(blocks, t.id, dtype)
                x = {m: torch.randn(m, kk, generator=gen).to(dtype) for m in (1, 8, 9, 512)}
                r = {"shape": f"{n}x{kk}", "type": name, "act": act, "ggml": ggml_ms}
                r["m1"] = best_of(lambda: k.linear(x[1], blocks, t.id), repeat)
                r["dense_m1"] = best_of(lambda: F.linear(x[1], w), repeat)
                r["m8"] = best_of(lambda: k.linear(x[8], blocks, t.id), repeat)
                r["m9"] = best_of(lambda: k.linear(x[9], blocks, t.id), repeat)
                if not quick:
                    r["m512"] = best_of(lambda: k.linear(x[512], blocks, t.id), max(2, repeat // 5))
                    wq = blocks
                    xb = x[512].to(torch.bfloat16)
                    r["dense_m512"] = best_of(lambda: F.linear(xb, k.dequantize(wq, t.id, torch.bfloat16)),
                                              max(2, repeat // 5))
                rows.append(r)
                print(f"{r['shape']} {name} {act}: M=1 {r['m1']:.3f} ms (F.linear {r['dense_m1']:.3f}), "
                      f"M=8 {r['m8']:.3f}, M=9 {r['m9']:.3f}, ggml {fmt(ggml_ms)}, M=512 {fmt(r.get('m512'), '.1f')} "
                      f"(dequantize + F.linear {fmt(r.get('dense_m512'), '.1f')})", flush=True)
            del w
    return rows


def bench_moe(k, types, repeat: int) -> list[dict]:
    experts, n, kk, used = 64, 1024, 2048, 8
    rows = []
    gen = torch.Generator().manual_seed(1)
    for name in types:
        t = resolve(name)
        raw = testing.random_blocks(name, experts * n * kk // t.block_elems, np.random.default_rng(t.id))
        blocks = torch.from_numpy(raw.reshape(experts, n, -1))
        for tokens in (1, 32):
            x = torch.randn(tokens, kk, generator=gen, dtype=torch.float32).to(torch.bfloat16)
            ids = torch.stack([torch.randperm(experts, generator=gen)[:used] for _ in range(tokens)]).to(torch.int32)

            def loop():
                out = torch.empty(tokens, used, n)
                for e in ids.unique().tolist():
                    t_idx, u_idx = (ids == e).nonzero(as_tuple=True)
                    w = k.dequantize(blocks[e], t.id, torch.bfloat16)
                    out[t_idx, u_idx] = (x[t_idx] @ w.T).float()
                return out

            ours = best_of(lambda: k.mul_mat_id(blocks, x, ids, t.id, n), repeat)
            base = best_of(loop, max(2, repeat // 3))
            rows.append({"type": name, "T": tokens, "ours": ours, "loop": base})
            print(f"mul_mat_id {name} T={tokens}: {ours:.3f} ms, dequantize + matmul loop {base:.3f} ms", flush=True)
    return rows


def chart(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, no chart written", file=sys.stderr)
        return
    sel = [r for r in rows if r["shape"] == "4096x4096" and r["act"] == "bf16"]
    names = [r["type"] for r in sel]
    series = {"vs F.linear bf16, M=1 (goal 2)": [r["dense_m1"] / r["m1"] for r in sel],
              "vs ggml_mul_mat, M=1 (aim 0.5)": [(r["ggml"] or 0) / r["m1"] for r in sel],
              "vs dequantize + F.linear, M=512 (goal 0.8)": [r.get("dense_m512", 0) / r["m512"] if "m512" in r else 0
                                                             for r in sel],
              "M=1 time / M=8 time (goal 0.4)": [r["m1"] / r["m8"] for r in sel]}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(np.arange(len(names)) + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("speed ratio (higher is better for us)")
    ax.set_title(f"gguf-dequant linear on packed weights, CPU ({torch.get_num_threads()} threads), 4096x4096, "
                 "bfloat16 activations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_markdown(rows, moe, path: Path, ggml_where: str, repeat: int, quick: bool, threads: int | None,
                   cpu_time: bool) -> None:
    clock = ("process CPU time (one thread: time other jobs hold the core is left out; caches and memory are "
             "still shared)" if cpu_time else "wall-clock time")
    threads = (f" --threads {threads}" if threads else "") + (" --cpu-time" if cpu_time else "")
    lines = [
        "# Compute on packed weights: CPU speed", "",
        f"Generated by `python benchmarks/matmul.py{' --quick' if quick else ''}{threads}` on "
        f"{datetime.date.today().isoformat()} (best of at least {repeat} runs and 0.5 s of runs; {clock}).", "",
        f"Machine: {machine()}. Load average (1 min) at the end: {os.getloadavg()[0]:.1f} (the run itself adds 1 "
        "to 2 on 2 cores; more means other jobs shared the cores: timings then move +-30% or more between runs, so "
        "compare within a row).", "",
        f"ggml: llama.cpp's `ggml_mul_mat` from {ggml_where} (AVX2 build), same thread count, float32 "
        "activations (it quantizes them to 8 bits; we do not).", "",
        "Columns: times in ms. *dense* = `F.linear` on the weight already dequantized to the activation dtype; "
        "x1/x8 = M = 8 time over M = 1 time (goal <= 2.5); x9/x8 = M = 9 over M = 8 (no step: about 1.125); ggml "
        "ratio = ggml time / ours (aim >= 0.5); M = 512 ratio = (dequantize + `F.linear` in bfloat16) / ours "
        "(goal >= 0.8). ✗ marks a missed goal.", "",
        "| shape | type | x | M=1 | dense M=1 | speed-up (goal 2) | M=8 | x8/x1 | M=9 | x9/x8 | ggml M=1 | ggml ratio "
        "| M=512 | deq+F.linear | ratio (goal 0.8) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['type']} | {r['act']} | {r['m1']:.3f} | {r['dense_m1']:.3f} | "
            f"{mark(r['dense_m1'] / r['m1'], GOALS['m1'])} | {r['m8']:.3f} | "
            f"{mark(r['m8'] / r['m1'], GOALS['m8'], False)} | {r['m9']:.3f} | {r['m9'] / r['m8']:.2f} | "
            f"{fmt(r['ggml'])} | {mark(r['ggml'] / r['m1'] if r['ggml'] else None, GOALS['ggml'])} | "
            f"{fmt(r.get('m512'), '.1f')} | {fmt(r.get('dense_m512'), '.1f')} | "
            f"{mark(r['dense_m512'] / r['m512'] if 'm512' in r else None, GOALS['m512'])} |")
    if moe:
        lines += ["", "`mul_mat_id`: 64 experts of 1024 x 2048, 8 per token, bfloat16 activations, against a loop "
                  "over the routed experts of dequantize (this package) + bfloat16 matmul.", "",
                  "| type | T | mul_mat_id ms | loop ms | speed-up |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['type']} | {r['T']} | {r['ours']:.3f} | {r['loop']:.3f} | {r['loop'] / r['ours']:.2f} |"
                  for r in moe]
    lines += ["", "Chart: `benchmarks/matmul.png` (4096 x 4096, bfloat16 activations).", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="4096 x 4096 only, no M = 512, no mul_mat_id")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch, our kernels and ggml (default: all)")
    ap.add_argument("--cpu-time", action="store_true", help="time the process's CPU time (needs --threads 1)")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "MATMUL.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        if args.threads != 1:
            ap.error("--cpu-time measures one thread: add --threads 1")
        global CLOCK
        CLOCK = time.process_time
    import kernels

    variant = ROOT / "build" / local_build.variant_name()
    if not (variant / "metadata.json").exists():
        print(f"no local build at {variant}: run python -m gguf_dequant.local_build", file=sys.stderr)
        return 1
    k = kernels.get_local_kernel(variant, backend="cpu")
    ggml, ggml_where = load_ggml()
    if ggml is None:
        print(f"ggml unavailable: {ggml_where}", file=sys.stderr)
    types = [s.strip().upper() for s in args.types.split(",")]
    rows = bench_linear(k, ggml, SHAPES[:1] if args.quick else SHAPES, types, args.repeat, args.quick)
    moe = [] if args.quick else bench_moe(k, types, args.repeat)
    write_markdown(rows, moe, args.output, ggml_where, args.repeat, args.quick, args.threads, args.cpu_time)
    chart(rows, args.output.with_suffix(".png").with_name("matmul.png"))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
