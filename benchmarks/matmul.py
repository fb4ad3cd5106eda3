"""CPU speed of compute on packed weights, written to benchmarks/MATMUL.md with a chart (benchmarks/matmul.png).

    bash tools/setup.sh && python benchmarks/matmul.py [--quick] [--types Q4_K,Q8_0] [--repeat R] [--threads T]

Weights: random blocks with finite scales (``gguf_dequant.testing.random_blocks``), shapes (N, K) = 4096 x 4096
(and 14336 x 4096 without ``--quick``); activations random normal in bfloat16 and float32; all cores (``--threads``
sets torch's thread count, and ggml's).

**Cold** (the headline): each timed call reads its weights from DRAM, as decoding a model does: the benchmark
rotates through copies of the weights totalling at least 4x the last-level cache (``lscpu``'s L3), one call per
copy, and reports the best mean over ``R`` rotations. **Hot**: the same copy every call (it stays in the caches);
best single call of at least R and 0.5 s of calls.

Compared at M = 1 and M = 8, for each type and activation dtype: llama.cpp's ``ggml_mul_mat`` built for this CPU
(``tools/build_llama_native.sh``: ``GGML_NATIVE=ON``; float32 activations, which it quantizes to 8 bits) and its
AVX2 build (``tools/build_llama.sh``, the exactness oracle); dense ``F.linear`` on the weight already dequantized
to bfloat16 and to float32; and at M = 512 dequantize (this package) to x's dtype + ``F.linear``. ``mul_mat_id``: 64
experts of 1024 x 2048, 8 per token, T = 1 and T = 32, against a loop over the routed experts of dequantize +
matmul (hot). The ISA of each side is stated in the output.
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

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "MXFP4", "IQ2_XXS", "Q3_K"]
SHAPES = [(4096, 4096), (14336, 4096)]
ACTS = {"bf16": torch.bfloat16, "f32": torch.float32}
# Issue 18's goals: ours / native llama.cpp at M = 1 (bf16 x, f32 x on the first 7 factored types; 0.5 and 2x dense
# bf16 on the others), M = 8 time / M = 1 time, ours / native llama.cpp at M = 8, M = 512 against dequantize + bf16
# F.linear.
FACTORED = {"Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "MXFP4"}
M512_RUNS = 7  # alternating runs of ours and of dequantize + F.linear at M = 512
GOALS = {"bf16": 1.0, "f32": 0.7, "other": 0.5, "m8_over_m1": 1.5, "m8_vs_ggml": 2.0, "m512": 1.0}


CLOCK = time.perf_counter


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


def best_of_alternating(a, b, runs: int) -> tuple[float, float]:
    """Best times in ms of ``a`` and ``b`` over ``runs`` alternating calls of each (after one untimed call each)."""
    a(), b()
    ta, tb = [], []
    for _ in range(runs):
        for fn, times in ((a, ta), (b, tb)):
            t0 = CLOCK()
            fn()
            times.append(CLOCK() - t0)
    return min(ta) * 1e3, min(tb) * 1e3


def rotation(fns, repeat: int) -> float:
    """Best mean time in ms per call over ``repeat`` rotations through ``fns`` (one call each)."""
    for fn in fns:
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        for fn in fns:
            fn()
        best = min(best, (CLOCK() - t0) / len(fns))
    return best * 1e3


def last_level_cache() -> int:
    """Bytes of the largest CPU cache (sysfs; lscpu reads the same)."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * mult)
    return max(sizes, default=32 << 20)


def copies_for(nbytes: int) -> int:
    """Copies of an nbytes tensor that together take at least 4x the last-level cache."""
    return max(2, -(-4 * last_level_cache() // nbytes))


def cpu_name() -> str:
    if not Path("/proc/cpuinfo").exists():
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())


def our_isa() -> str:
    isa = os.environ.get("GGUF_DEQUANT_CPU_ISA")
    if isa:
        return f"capped by GGUF_DEQUANT_CPU_ISA={isa}"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if {"avx512_bf16", "avx512vbmi", "bmi2"} <= set(flags.split()):
        return ("AVX-512 + AVX512-BF16: mat-vec tier (M <= 8) with f32 FMAs on exact scaled weights (x of every dtype "
                "as f32), for every quantized type (on AMX, MXFP4 with bf16 x takes the AMX tier's order at M <= 8 "
                "too); AMX tier (M > 8, bf16 x) or AVX-512 FMA matrix kernels otherwise")
    return "AVX-512 / AVX2 FMA matrix kernels (no AVX512-BF16 here: no mat-vec tier)"


def machine() -> str:
    return (f"{cpu_name()}, {os.cpu_count()} logical cores, last-level cache {last_level_cache() >> 20} MiB; "
            f"{platform.system()} {platform.machine()}; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})")


class Ggml:
    """llama.cpp's CPU mul_mat through ctypes (fused.md section 2 has the call sequence). One graph holds one
    ggml_mul_mat per weight copy, computed by one call: llama.cpp's own way of running a model's matmuls."""

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]

    FEATURES = ["avx2", "avx512", "avx512_vbmi", "avx512_vnni", "avx512_bf16", "amx_int8"]

    def __init__(self, libdir: Path):
        # Both builds side by side: RTLD_LOCAL, so that each libggml-cpu's kernel tables point to its own
        # functions (with RTLD_GLOBAL the first library loaded would win every symbol lookup).
        mode = ctypes.RTLD_LOCAL
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
        b.ggml_graph_overhead.restype = ctypes.c_size_t
        b.ggml_build_forward_expand.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        c.ggml_graph_compute_with_ctx.restype = ctypes.c_int
        c.ggml_graph_compute_with_ctx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        c.ggml_cpu_init()
        self.isa = ", ".join(f for f in self.FEATURES if getattr(c, f"ggml_cpu_has_{f}")()) or "baseline"

    def time_mul_mat(self, type_id: int, blocks: np.ndarray, k: int, x: np.ndarray, copies: int,
                     repeat: int) -> tuple[float, np.ndarray]:
        """(best mean ms per mul_mat, result (M, N) of the first) of ``copies`` ggml_mul_mat(W_i, x) in one graph,
        W_i = copy i of ``blocks`` (copies = 1: the same weights every time: hot), float32 x (M, K)."""
        n, m = blocks.shape[0], x.shape[0]
        nodes = max(copies, 16)
        # Weights, x, outputs, graph, one work buffer (8-bit activations) per run.
        size = (copies * blocks.nbytes + x.nbytes + nodes * (4 * m * n + 1024) + self.base.ggml_graph_overhead()
                + (repeat + 2) * (2 * x.nbytes + (1 << 20)) + (16 << 20))
        ctx = self.base.ggml_init(self.InitParams(size, None, False))
        try:
            xt = self.base.ggml_new_tensor_2d(ctx, 0, k, m)
            ctypes.memmove(self.base.ggml_get_data(xt), np.ascontiguousarray(x).ctypes.data, x.nbytes)
            weights = []
            for _ in range(copies):
                w = self.base.ggml_new_tensor_2d(ctx, type_id, k, n)
                ctypes.memmove(self.base.ggml_get_data(w), blocks.ctypes.data, blocks.nbytes)
                weights.append(w)
            graph = self.base.ggml_new_graph(ctx)
            ys = [self.base.ggml_mul_mat(ctx, weights[i % copies], xt) for i in range(nodes)]
            for y in ys:
                self.base.ggml_build_forward_expand(graph, y)
            threads = torch.get_num_threads()
            t = best_of(lambda: self.cpu.ggml_graph_compute_with_ctx(ctx, graph, threads), repeat, min_seconds=0)
            out = np.ctypeslib.as_array((ctypes.c_float * (m * n)).from_address(self.base.ggml_get_data(ys[0])))
            return t / nodes, out.reshape(m, n).copy()
        finally:
            self.base.ggml_free(ctx)


def load_ggml(env: str, default: Path) -> tuple[Ggml | None, str]:
    libdir = Path(os.environ.get(env, default))
    where = str(libdir.relative_to(ROOT) if libdir.is_relative_to(ROOT) else libdir)
    if not (libdir / "libggml-cpu.so").exists():
        return None, f"no libggml-cpu.so in {where}"
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


def bench_linear(k, ggmls: dict, shapes, types, repeat: int, quick: bool) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    rot = max(3, repeat // 3)
    for n, kk in shapes:
        for name in types:
            t = resolve(name)
            raw = testing.random_blocks(name, n * kk // t.block_elems, np.random.default_rng(t.id)).reshape(n, -1)
            blocks = torch.from_numpy(raw)
            cold = [blocks.clone() for _ in range(copies_for(raw.nbytes))]
            x32 = {m: torch.randn(m, kk, generator=gen) for m in (1, 8, 9, 512)}
            g = {}
            for label, ggml in ggmls.items():
                if ggml is None:
                    continue
                for m in (1, 8):
                    g[f"{label}_cold_m{m}"], got = ggml.time_mul_mat(t.id, raw, kk, x32[m].numpy(), len(cold), rot)
                    g[f"{label}_hot_m{m}"], _ = ggml.time_mul_mat(t.id, raw, kk, x32[m].numpy(), 1, repeat)
                    ours = k.linear(x32[m], blocks, t.id).numpy()
                    scale = (np.abs(x32[m].numpy()) @ np.abs(k.dequantize(blocks, t.id).numpy()).T).max()
                    assert np.abs(got - ours).max() <= 0.05 * scale, f"ggml disagrees on {name}"  # 8-bit x
            for act, dtype in ACTS.items():
                x = {m: v.to(dtype) for m, v in x32.items()}
                r = {"shape": f"{n}x{kk}", "type": name, "act": act, "bytes": raw.nbytes, "copies": len(cold), **g}
                for m in (1, 8):
                    r[f"cold_m{m}"] = rotation([lambda b=b: k.linear(x[m], b, t.id) for b in cold], rot)
                    r[f"hot_m{m}"] = best_of(lambda: k.linear(x[m], blocks, t.id), repeat)
                r["hot_m9"] = best_of(lambda: k.linear(x[9], blocks, t.id), repeat)
                w = k.dequantize(blocks, t.id, dtype)
                dense = [w.clone() for _ in range(copies_for(w.numel() * w.element_size()))]
                r["dense_cold_m1"] = rotation([lambda d=d: F.linear(x[1], d) for d in dense], rot)
                r["dense_hot_m1"] = best_of(lambda: F.linear(x[1], w), repeat)
                del dense, w
                # Like for like: the weight dequantized to x's dtype (a float32 GEMM for float32 x) into one buffer
                # reused by every call, as GgufLinear's workspace is (a fresh 32 MiB tensor per call would add its
                # page faults, about 8 ms here); the two sides alternate, so a busy moment costs both.
                buf = torch.empty(n, kk, dtype=dtype)
                r["m512"], r["deq_m512"] = best_of_alternating(
                    lambda: k.linear(x[512], blocks, t.id),
                    lambda: F.linear(x[512], k.dequantize(blocks, t.id, dtype=dtype, out=buf)), M512_RUNS)
                del buf
                rows.append(r)
                print(f"{r['shape']} {name} {act}: M=1 cold {r['cold_m1']:.3f} ms (llama.cpp native "
                      f"{fmt(r.get('native_cold_m1'))}, AVX2 {fmt(r.get('avx2_cold_m1'))}), hot {r['hot_m1']:.3f} "
                      f"(native {fmt(r.get('native_hot_m1'))}); M=8 cold {r['cold_m8']:.3f} (native "
                      f"{fmt(r.get('native_cold_m8'))}); dense {act} cold {r['dense_cold_m1']:.3f}; M=512 "
                      f"{fmt(r.get('m512'), '.1f')} (dequantize + F.linear {fmt(r.get('deq_m512'), '.1f')})",
                      flush=True)
            del cold
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


def goal_m1(r: dict) -> float:
    return GOALS[r["act"]] if r["type"] in FACTORED else GOALS["other"]


def chart_path(output: Path) -> Path:
    """The chart beside a results file: MATMUL.md -> matmul.png, MATMUL_OTHER_TYPES.md -> matmul_other_types.png."""
    return output.with_name(output.stem.lower() + ".png")


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
    series = {"vs llama.cpp native, M=1 cold (goal 1; 0.5 unfactored)":
              [(r.get("native_cold_m1") or 0) / r["cold_m1"] for r in sel],
              "vs llama.cpp native, M=1 hot": [(r.get("native_hot_m1") or 0) / r["hot_m1"] for r in sel],
              "vs dense bf16 F.linear, M=1 cold": [r["dense_cold_m1"] / r["cold_m1"] for r in sel],
              "vs llama.cpp native, M=8 cold (goal 2)": [(r.get("native_cold_m8") or 0) / r["cold_m8"] for r in sel]}
    fig, ax = plt.subplots(figsize=(11, 4.5))
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


def gbs(nbytes: int, ms: float | None) -> str:
    return "–" if not ms else f"{nbytes / ms / 1e6:.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def write_markdown(rows, moe, path: Path, wheres: dict, isas: dict, repeat: int, quick: bool,
                   threads: int | None, cpu_time: bool, types: list[str]) -> None:
    opts = (" --quick" if quick else "") + (f" --threads {threads}" if threads else "") + (
        " --cpu-time" if cpu_time else "") + ("" if types == TYPES else f" --types {','.join(types)}")
    clock = ("process CPU time of one thread: the time other jobs hold the core is left out; caches and DRAM "
             "bandwidth are still shared" if cpu_time else "wall-clock time")
    lines = [
        "# Compute on packed weights: CPU speed", "",
        f"Generated by `python benchmarks/matmul.py{opts}` on "
        f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC ({clock}).", "",
        f"Machine: {machine()}. Load average (1 / 5 min) at the end: {os.getloadavg()[0]:.1f} / "
        f"{os.getloadavg()[1]:.1f} (the run itself adds 1 to 2 on 2 cores; more means other jobs shared the cores: "
        "timings then move +-30% or more between runs, so compare within a row).", "",
        "Instruction sets: **ours** " + our_isa() + "; **llama.cpp native** (`ggml_mul_mat`, "
        f"{wheres.get('native', '–')}, `GGML_NATIVE=ON`): {isas.get('native', 'not built')}; **llama.cpp AVX2** "
        f"({wheres.get('avx2', '–')}, `GGML_NATIVE=OFF`, the exactness oracle): {isas.get('avx2', 'not built')}. "
        "llama.cpp quantizes float32 x to 8 bits and runs all its matmuls of a measurement in one graph (one "
        "thread-pool start); ours are one torch op call each (about 10 us of dispatch included). Its repacked and "
        "AMX weight layouts (extra buffer types) are not used through this API.", "",
        "**Cold**: one call per weight copy, rotating through copies totalling >= 4x the last-level cache (column "
        "*copies*), best mean per call over the rotations: the weights come from DRAM, as when decoding a model. "
        "**Hot**: the same weights every call (they stay in cache). GB/s = weight bytes / time. Ratios are speed "
        "ratios (their time / ours: > 1 means we are faster). ✗ marks a missed goal of issue 18.", "",
        "## M = 1", "",
        "Goals: ours / llama.cpp native (cold) >= 1.0 with bf16 x, >= 0.7 with f32 x on the factored types (Q4_0, "
        "Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS, MXFP4); >= 0.5 and >= 2x dense bf16 `F.linear` on the others.", "",
        "| shape | type | x | copies | ours cold ms | native cold ms | **vs native** | ours GB/s | native GB/s "
        "| AVX2 cold ms | vs AVX2 | ours hot ms | native hot ms | vs native hot | dense cold ms | vs dense |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['type']} | {r['act']} | {r['copies']} | {r['cold_m1']:.3f} | "
            f"{fmt(r.get('native_cold_m1'))} | **{mark(ratio(r.get('native_cold_m1'), r['cold_m1']), goal_m1(r))}** | "
            f"{gbs(r['bytes'], r['cold_m1'])} | {gbs(r['bytes'], r.get('native_cold_m1'))} | "
            f"{fmt(r.get('avx2_cold_m1'))} | {fmt(ratio(r.get('avx2_cold_m1'), r['cold_m1']), '.2f')} | "
            f"{r['hot_m1']:.3f} | {fmt(r.get('native_hot_m1'))} | "
            f"{fmt(ratio(r.get('native_hot_m1'), r['hot_m1']), '.2f')} | {r['dense_cold_m1']:.3f} | "
            f"{mark(ratio(r['dense_cold_m1'], r['cold_m1']), 2.0 if r['type'] not in FACTORED and r['act'] == 'bf16' else 0)} |")
    lines += [
        "", "## M = 8, 9, 512", "",
        "Goals: M = 8 cold time <= 1.5x the M = 1 cold time, and >= 2x llama.cpp native's speed at M = 8; M = 512 "
        ">= 1.0x dequantize + bfloat16 `F.linear` with bfloat16 x (M > 8 is the matrix tier, hot). At M = 512 ours and the "
        f"comparator alternate, best of {M512_RUNS} each; the comparator dequantizes to x's dtype into one reused buffer (as `GgufLinear`'s workspace: no page faults of a fresh tensor per call): with float32 x it is a float32 GEMM (no goal there). M = 9 / M = 8 "
        "(hot) shows the step between the tiers.", "",
        "| shape | type | x | ours M=8 cold ms | M=8 / M=1 | native M=8 cold ms | vs native M=8 | ours M=8 hot | "
        "M=9 hot | M=9 / M=8 | M=512 ms | dequantize + F.linear ms | vs deq+F.linear |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['type']} | {r['act']} | {r['cold_m8']:.3f} | "
            f"{mark(r['cold_m8'] / r['cold_m1'], GOALS['m8_over_m1'], False)} | {fmt(r.get('native_cold_m8'))} | "
            f"{mark(ratio(r.get('native_cold_m8'), r['cold_m8']), GOALS['m8_vs_ggml'])} | {r['hot_m8']:.3f} | "
            f"{r['hot_m9']:.3f} | {r['hot_m9'] / r['hot_m8']:.2f} | {fmt(r.get('m512'), '.1f')} | "
            f"{fmt(r.get('deq_m512'), '.1f')} | "
            f"{mark(ratio(r.get('deq_m512'), r.get('m512')), GOALS['m512'] if r['act'] == 'bf16' else 0)} |")
    if moe:
        lines += ["", "## mul_mat_id", "", "64 experts of 1024 x 2048, 8 per token, bfloat16 activations, hot, against "
                  "a loop over the routed experts of dequantize (this package) + bfloat16 matmul.", "",
                  "| type | T | mul_mat_id ms | loop ms | speed-up |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['type']} | {r['T']} | {r['ours']:.3f} | {r['loop']:.3f} | {r['loop'] / r['ours']:.2f} |"
                  for r in moe]
    lines += ["", f"Chart: `benchmarks/{chart_path(path).name}` (4096 x 4096, bfloat16 activations).", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="4096 x 4096 only, no mul_mat_id")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch, our kernels and ggml (default: all)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the process's CPU time (needs --threads 1): leaves out the time other jobs hold the core")
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
    ggmls, wheres, isas = {}, {}, {}
    for label, env, default in (("native", "LLAMA_NATIVE_LIBDIR", ROOT / ".cache" / "llama-native" / "lib"),
                                ("avx2", "LLAMA_LIBDIR", ROOT / ".cache" / "llama" / "lib")):
        ggmls[label], wheres[label] = load_ggml(env, default)
        if ggmls[label] is None:
            print(f"llama.cpp {label} unavailable: {wheres[label]}", file=sys.stderr)
        else:
            isas[label] = ggmls[label].isa
    types = [s.strip().upper() for s in args.types.split(",")]
    rows = bench_linear(k, ggmls, SHAPES[:1] if args.quick else SHAPES, types, args.repeat, args.quick)
    moe = [] if args.quick else bench_moe(k, types, args.repeat)
    write_markdown(rows, moe, args.output, wheres, isas, args.repeat, args.quick, args.threads, args.cpu_time, types)
    chart(rows, chart_path(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
