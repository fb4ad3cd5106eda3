"""transformers on this package vs transformers' defaults, on real GGUF files built offline.

    python benchmarks/transformers_bench.py [--out benchmarks/TRANSFORMERS.md] [--only decode|load]

- Packed path (transformers' new loader): an LFM2 model of ~360M parameters (LFM2-350M's shape: hidden 1024,
  16 layers, 65536-token vocabulary) and a qwen35 model of Qwen3.5-0.8B's shape (hidden 1024, 24 layers, 3 of 4
  gated delta-net; the same vocabulary), both in Q4_K_M. Decode tokens/s (greedy, 1 token at a time) and the share
  of a decode step spent in the linear layers, prefill tokens/s for a 512-token prompt, resident memory: weights
  packed on this kernel (`install_kernel`) in float32 and bfloat16, vs transformers' default without a kernel
  (dequantized at load to dense float32 / bfloat16).
- Legacy loader: a ~1.8B-parameter llama in Q4_K_M (a 1.08 GB file) loaded to bfloat16: wall time and peak RSS of
  `from_pretrained`, transformers' default vs `fast_gguf_load()`.

Each configuration runs in its own process (clean memory figures). The models are built by
tests/transformers_models.py on first use (transformers checkpoint -> llama.cpp converter -> libllama quantizer;
a few minutes) and cached under .cache/transformers-models.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DECODE_TOKENS = 32
PREFILL_TOKENS = 512
REPEATS = 3

# Runs in a fresh process: argv = mode, file; prints one JSON line.
_CHILD = r"""
import json, resource, sys, time, os
import torch, transformers
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
transformers.logging.set_verbosity_error()
mode, path = sys.argv[1], Path(sys.argv[2])
if os.environ.get("GGUF_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["GGUF_BENCH_THREADS"]))
# wall time, or (one thread, --cpu-time) the process's CPU time, which other jobs on the machine do not inflate
clock = time.process_time if os.environ.get("GGUF_BENCH_CPU_TIME") else time.perf_counter
kind, dtype = mode.rsplit("-", 1)
dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

if kind == "packed":
    from gguf_dequant.integrations.transformers import install_kernel
    install_kernel()
# import the architecture's code first (a model on the meta device), so that "before" holds every library
with torch.device("meta"):
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path.parent, gguf_file=path.name))
before = rss()
t0 = time.perf_counter()
if kind == "fastload":
    from gguf_dequant.integrations.transformers import fast_gguf_load
    with fast_gguf_load():
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
else:
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
load = time.perf_counter() - t0
model.eval()
tensors = {id(t): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
out = {"mode": mode, "load_s": load, "rss_before": before, "rss_loaded": rss(), "peak_load": peak(),
       "tensor_bytes": sum(tensors.values()),
       "gguf_modules": sum(type(m).__name__.startswith("Gguf") for m in model.modules())}
if "--load-only" not in sys.argv:
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    with torch.no_grad():
        prompt = torch.randint(3, vocab, (1, 8), generator=g)
        model.generate(prompt, max_new_tokens=4, do_sample=False)  # warm-up

        class Stamps:  # generate calls put() once for the prompt, then once per new token
            def __init__(self):
                self.times = []
            def put(self, value):
                self.times.append(clock())
            def end(self):
                pass

        steps = []
        for _ in range(REPEATS):
            stamps = Stamps()
            model.generate(prompt, max_new_tokens=DECODE + 1, min_new_tokens=DECODE + 1, do_sample=False,
                           streamer=stamps)
            steps += [b - a for a, b in zip(stamps.times[2:], stamps.times[3:])]  # token 2 on: one-token forwards
        steps.sort()
        decode = [1 / steps[len(steps) // 2]]

        # the share of a decode step spent in the linear layers: their forwards timed with the same clock
        spent = [0.0]
        classes = {type(m) for m in model.modules() if type(m).__name__ in ("Linear", "GgufLinear")}
        originals = {c: c.forward for c in classes}

        def timed(forward):
            def call(self, *args, **kwargs):
                t = clock()
                result = forward(self, *args, **kwargs)
                spent[0] += clock() - t
                return result
            return call

        class Split(Stamps):
            def put(self, value):
                super().put(value)
                self.spent = getattr(self, "spent", []) + [spent[0]]

        for c in classes:
            c.forward = timed(originals[c])
        split = Split()
        model.generate(prompt, max_new_tokens=DECODE + 1, min_new_tokens=DECODE + 1, do_sample=False, streamer=split)
        for c in classes:
            c.forward = originals[c]
        linear_share = (split.spent[-1] - split.spent[2]) / (split.times[-1] - split.times[2])
        long = torch.randint(3, vocab, (1, PREFILL), generator=g)
        prefill = []
        for _ in range(REPEATS):
            t = clock()
            model(long, use_cache=False)
            prefill.append(PREFILL / (clock() - t))
    out.update(decode_tok_s=max(decode), linear_share=linear_share, prefill_tok_s=max(prefill), rss_after=rss(),
               peak_run=peak())
print(json.dumps(out))
"""


def run_child(mode: str, path: Path, load_only: bool = False) -> dict:
    code = _CHILD.replace("REPEATS", str(REPEATS)).replace("DECODE", str(DECODE_TOKENS)) \
        .replace("PREFILL", str(PREFILL_TOKENS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-c", code, mode, str(path)] + (["--load-only"] if load_only else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {mode}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})}",
          flush=True)
    return result


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def machine(threads: int | None) -> str:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{datetime.date.today()}; {platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
            f"torch {torch.__version__} "
            f"({threads or torch.get_num_threads()} threads), transformers {transformers.__version__}; load average {os.getloadavg()[0]:.1f} "
            "at the end (on 2 cores the run itself adds 1 to 2: much more means other jobs shared the cores and the "
            "figures are noisy)")


DECODE_MODELS = ("lfm2-350m", "qwen35-0.8b")


def decode_section(path: Path) -> list[str]:
    rows = {m: run_child(m, path) for m in ("dense-bf16", "dense-f32", "packed-f32", "packed-bf16")}
    base = rows["dense-bf16"]
    lines = [f"### Packed path: `{path.name}` ({path.stat().st_size / 1e6:.0f} MB), decode and prefill", "",
             "| transformers | load s | decode tok/s | vs dense bf16 | in linear layers | prefill tok/s (512) | "
             "vs dense bf16 | tensors | RSS after load | added by the load | vs dense bf16 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = {"dense-bf16": "default, bfloat16 (dequantized at load)",
             "dense-f32": "default, float32 (dequantized at load)",
             "packed-f32": "packed on gguf-dequant, float32", "packed-bf16": "packed on gguf-dequant, bfloat16"}
    for mode, r in rows.items():
        lines.append(f"| {names[mode]} | {r['load_s']:.1f} | {r['decode_tok_s']:.2f} | "
                     f"{r['decode_tok_s'] / base['decode_tok_s']:.2f}x | {r['linear_share']:.0%} | "
                     f"{r['prefill_tok_s']:.0f} | "
                     f"{r['prefill_tok_s'] / base['prefill_tok_s']:.2f}x | {gib(r['tensor_bytes'])} | "
                     f"{gib(r['rss_loaded'])} | {gib(r['rss_loaded'] - r['rss_before'])} | "
                     f"{(r['rss_loaded'] - r['rss_before']) / (base['rss_loaded'] - base['rss_before']):.2f}x |")
    best = max(rows["packed-f32"]["decode_tok_s"], rows["packed-bf16"]["decode_tok_s"])
    best_prefill = max(rows["packed-f32"]["prefill_tok_s"], rows["packed-bf16"]["prefill_tok_s"])
    added = min(r["rss_loaded"] - r["rss_before"] for m, r in rows.items() if m.startswith("packed"))
    whole = min(r["rss_loaded"] for m, r in rows.items() if m.startswith("packed"))
    lines += ["", f"Goals: decode >= 3x dense bf16 -> {best / base['decode_tok_s']:.2f}x; resident memory <= 0.4x -> "
              f"{added / (base['rss_loaded'] - base['rss_before']):.2f}x added by the load "
              f"({whole / base['rss_loaded']:.2f}x for the whole process, python and torch included; tensors alone "
              f"{rows['packed-f32']['tensor_bytes'] / base['tensor_bytes']:.2f}x); prefill >= 1.0x -> "
              f"{best_prefill / base['prefill_tok_s']:.2f}x.", ""]
    return lines


def load_section(path: Path) -> list[str]:
    rows = {m: run_child(m, path, load_only=True) for m in ("dense-bf16", "fastload-bf16")}
    base = rows["dense-bf16"]
    lines = [f"### Legacy loader: `{path.name}` ({path.stat().st_size / 1e9:.2f} GB) to bfloat16", "",
             "| loader | from_pretrained s | speed-up | peak RSS | loaded tensors | peak / tensors |",
             "|---|---:|---:|---:|---:|---:|"]
    names = {"dense-bf16": "transformers default (gguf-py)", "fastload-bf16": "`fast_gguf_load()` (gguf-dequant)"}
    for mode, r in rows.items():
        lines.append(f"| {names[mode]} | {r['load_s']:.1f} | {base['load_s'] / r['load_s']:.2f}x | "
                     f"{gib(r['peak_load'])} | {gib(r['tensor_bytes'])} | "
                     f"{r['peak_load'] / r['tensor_bytes']:.2f} |")
    fast = rows["fastload-bf16"]
    lines += ["", f"Goals: load >= 3x faster -> {base['load_s'] / fast['load_s']:.2f}x; peak RSS <= 1.2x the loaded "
              f"model -> {fast['peak_load'] / fast['tensor_bytes']:.2f}x (the whole process: python, torch and "
              f"transformers take {gib(fast['rss_before'])} before loading).", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "TRANSFORMERS.md")
    parser.add_argument("--only", choices=["decode", "load"])
    parser.add_argument("--threads", type=int, help="torch threads in every run (default: torch's own)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, decode and prefill timed in process CPU time (for a busy machine)")
    args = parser.parse_args(argv)
    if args.cpu_time:
        args.threads = 1
        os.environ["GGUF_BENCH_CPU_TIME"] = "1"
    if args.threads:
        os.environ["GGUF_BENCH_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    from tests.transformers_models import build

    start = time.time()
    lines = ["# transformers on gguf-dequant", "",
             "Command: `python benchmarks/transformers_bench.py`. Models built offline by "
             "`tests/transformers_models.py` (random weights written by transformers, converted by llama.cpp's "
             f"`convert_hf_to_gguf.py`, quantized by libllama). Decode: greedy `generate`, {DECODE_TOKENS} new "
             f"tokens after an 8-token prompt, {REPEATS} times; tokens/s = 1 / the median time between consecutive "
             "tokens (a streamer timestamps each; the median resists the other jobs' bursts). Prefill: one forward "
             f"of a {PREFILL_TOKENS}-token prompt, best of {REPEATS}. RSS: the process's resident set "
             "(`/proc/self/statm`; peak: `ru_maxrss`)." + (
                 " **Timed in process CPU time with one thread (`--cpu-time`)**: the machine was busy with other "
                 "jobs; load times stay wall time." if args.cpu_time else ""), ""]
    if args.only in (None, "decode"):
        for name in DECODE_MODELS:
            lines += decode_section(build(name, "Q4_K_M"))
    if args.only in (None, "load"):
        lines += load_section(build("llama-2b", "Q4_K_M"))
    lines += ["Notes:", "",
              "- Decode: \"in linear layers\" is the share of a decode step spent in the forwards of the linear "
              "layers (packed: `GgufLinear` on this kernel's `linear`; dense: `nn.Linear`), timed in one more "
              "generate. The rest of a step (norms, LFM2's short convolutions, qwen35's gated delta-net in torch, "
              "attention, sampling, python) is the same work on both paths, so it bounds the packed speed-up over "
              "dense: at most (dense step) / (rest of the step) even with free matmuls.",
              "- Prefill (512 rows): `install_kernel` routes a prompt through `linear` only up to the row limit of "
              "`LINEAR_MAX_ROWS` per type and dtype (`benchmarks/LINEAR_ROUTING.md`: none reaches 512 rows); above "
              "it each packed weight is dequantized once (on this kernel) to the activation dtype, into a reused "
              "per-thread workspace of 32 MiB (the tied 64M-element lm_head in row chunks), and multiplied by "
              "torch (`F.linear`). In float32 that is a float32 GEMM, slower on this CPU than the bfloat16 GEMM of "
              "the dense bfloat16 model; the packed bfloat16 row is the like-for-like comparison for the prefill goal.",
              "- Memory: \"added by the load\" is the resident set after `from_pretrained` minus before it, with every "
              "library already imported (a meta-device model of the architecture is built first).", ""]
    lines += [f"Machine: {machine(args.threads)}. Run time {time.time() - start:.0f} s.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
