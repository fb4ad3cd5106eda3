"""diffusers' GGUF path on this package vs diffusers' own, on a Flux-shaped transformer at real width.

    python benchmarks/diffusers_bench.py [--out benchmarks/DIFFUSERS.md]

Model: FluxTransformer2DModel with hidden 3072 (24 heads of 128), 2 double-stream and 2 single-stream blocks,
random weights quantized by llama.cpp to Q4_K and to Q8_0 (tests/diffusers_models.py "flux-bench", built on first
use and cached under .cache/diffusers-models), loaded with ``from_single_file`` and
``GGUFQuantizationConfig(compute_dtype=torch.bfloat16)``. Input: 1024 image tokens and 256 text tokens.

Per type and path (diffusers' own, or after ``install_kernel()``), in a fresh process with 2 threads: one
forward's wall time (one run, after a warm-up forward on 16 + 16 tokens), the resident set before it and its peak
during it (``VmHWM`` after resetting it through ``/proc/self/clear_refs``; before that, ``VmHWM`` is the load's
peak), and one layer's weight dequantization to bfloat16 (the double block's
feed-forward up-projection, 3072 -> 12288; best of 3): ``dequantize_gguf_tensor`` (+ the cast to the compute dtype
``GGUFLinear`` does) vs ``gguf_dequant.dequantize`` into a new tensor and into a reused one (what the replaced
``GGUFLinear`` does on the CPU: a new large tensor costs its page faults, about as much as the decoding). Last,
the crossover behind ``DENSE_FROM_ROWS``: one 3072 x 3072 layer, fused product vs dense path, by rows and dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("Q4_K", "Q8_0")
IMAGE_TOKENS, TEXT_TOKENS = 1024, 256
THREADS = 2

# The best of n timed calls after one warm-up, in both child processes.
_BEST = """
import time

def best(fn, n=3):
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)
"""

# Runs in a fresh process: argv = path ("diffusers" or "ours"), GGUF file, config dir; prints one JSON line.
_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
from diffusers.quantizers.gguf import utils
import gguf_dequant
path, gguf_file, config = sys.argv[1:4]
image_tokens, text_tokens = int(sys.argv[5]), int(sys.argv[6])
if path == "ours":
    from gguf_dequant.integrations.diffusers import install_kernel
    install_kernel()
dtype = torch.bfloat16
model = FluxTransformer2DModel.from_single_file(gguf_file, config=config, local_files_only=True, torch_dtype=dtype,
    quantization_config=GGUFQuantizationConfig(compute_dtype=dtype)).eval()

def inputs(n_image, n_text):
    g = torch.Generator().manual_seed(0)
    side = int(n_image ** 0.5)
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(float(side)), torch.arange(float(side)),
                                     indexing="ij"), -1).reshape(-1, 3)
    return dict(hidden_states=torch.randn(1, n_image, 64, generator=g).to(dtype),
                encoder_hidden_states=torch.randn(1, n_text, 4096, generator=g).to(dtype),
                pooled_projections=torch.randn(1, 768, generator=g).to(dtype),
                timestep=torch.tensor([0.5], dtype=dtype), guidance=torch.tensor([3.5], dtype=dtype),
                img_ids=ids, txt_ids=torch.zeros(n_text, 3), return_dict=False)

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

with torch.no_grad():
    model(**inputs(16, 16))
    x = inputs(image_tokens, text_tokens)
    before, load_peak = status("VmRSS"), status("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident set: the forward's own peak from here
    t0 = time.perf_counter()
    model(**x)
    forward = time.perf_counter() - t0
    forward_peak = status("VmHWM")
weight = model.transformer_blocks[0].ff.net[0].proj.weight

blocks = weight.as_tensor().view(torch.uint8)
out = torch.empty(weight.quant_shape, dtype=dtype)
layer = {"ours": best(lambda: gguf_dequant.dequantize(blocks, int(weight.quant_type), dtype)),
         "ours_out": best(lambda: gguf_dequant.dequantize(blocks, int(weight.quant_type), dtype, out=out)),
         "diffusers": best(lambda: utils.dequantize_gguf_tensor(weight)),
         "diffusers_cast": best(lambda: utils.dequantize_gguf_tensor(weight).to(dtype))} if path == "diffusers" else {}
print(json.dumps({"forward_s": forward, "rss_before": before, "forward_peak": forward_peak,
                  "load_peak": load_peak, "layer": layer, "layer_shape": list(weight.quant_shape),
                  "backend": gguf_dequant.explain("cpu", int(weight.quant_type))[1]}))
"""

# Runs in a fresh process: the crossover behind integration.DENSE_FROM_ROWS; prints one JSON line.
_CROSSOVER = r"""
import json, sys, time
import numpy as np, torch, torch.nn.functional as F
import gguf_dequant
from gguf_dequant.blocks import random_blocks
from gguf_dequant.types import resolve
torch.set_num_threads(int(sys.argv[1]))
rows_list, types = json.loads(sys.argv[2]), json.loads(sys.argv[3])

result = []
for name in types:
    t = resolve(name)
    raw = random_blocks(t, 3072 * 3072 // t.block_elems, np.random.default_rng(0))
    blocks = torch.from_numpy(raw.reshape(3072, -1))
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        w = torch.empty(3072, 3072, dtype=dtype)
        for rows in rows_list:
            x = torch.randn(rows, 3072).to(dtype)
            fused = best(lambda: gguf_dequant.linear(x, blocks, name))
            dense = best(lambda: F.linear(x, gguf_dequant.dequantize(blocks, name, dtype, out=w)))
            result.append([name, str(dtype).split(".")[1], rows, fused, dense])
print(json.dumps(result))
"""
CROSSOVER_ROWS = (9, 16, 32, 64, 128, 256, 512)


def _child(script: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _BEST + script, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run(path: str, gguf_file: Path, config: Path) -> dict:
    return _child(_CHILD, path, gguf_file, config, THREADS, IMAGE_TOKENS, TEXT_TOKENS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "DIFFUSERS.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import diffusers
    import torch

    from tests.diffusers_models import build

    started = time.time()
    load_start = os.getloadavg()[0]
    rows = []
    for qtype in TYPES:
        gguf_file, config = build("flux-bench", qtype)
        theirs = _run("diffusers", gguf_file, config)
        ours = _run("ours", gguf_file, config)
        rows.append((qtype, gguf_file, theirs, ours))
        print(qtype, json.dumps(theirs), json.dumps(ours), file=sys.stderr, flush=True)
    crossover = _child(_CROSSOVER, THREADS, json.dumps(CROSSOVER_ROWS), json.dumps(TYPES))
    load_end = os.getloadavg()[0]

    gib = 1 << 30
    lines = ["# diffusers on gguf-dequant", "",
             "Command: `python benchmarks/diffusers_bench.py`. "
             + " ".join(__doc__.split("\n\n")[2:4]).replace("\n", " "),
             "", "| type | file | path | forward s (1024 + 256 tokens) | vs diffusers | RSS before the forward | "
             "peak RSS during the forward | vs diffusers | peak RSS of the load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for qtype, gguf_file, theirs, ours in rows:
        size = f"{gguf_file.stat().st_size / gib:.2f} GiB"
        for name, r in (("diffusers 0.42.1 (own GGUF path)", theirs), ("`install_kernel()` (gguf-dequant)", ours)):
            lines.append(f"| {qtype} | {size} | {name} | {r['forward_s']:.2f} | "
                         f"{theirs['forward_s'] / r['forward_s']:.2f}x | {r['rss_before'] / gib:.2f} GiB | "
                         f"{r['forward_peak'] / gib:.2f} GiB | {r['forward_peak'] / theirs['forward_peak']:.2f}x | "
                         f"{r['load_peak'] / gib:.2f} GiB |")
    lines += ["", "One layer's weight dequantization to bfloat16 (the up-projection of the first double block's "
              "feed-forward, best of 3):", "",
              "| type | shape | `dequantize_gguf_tensor` ms | + cast to bfloat16 ms | `gguf_dequant.dequantize` ms, "
              "new tensor | speed-up (vs + cast) | into a reused buffer (as `GGUFLinear` does) ms | "
              "speed-up (vs + cast) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for qtype, _, theirs, _ in rows:
        layer = theirs["layer"]
        shape = "x".join(map(str, theirs["layer_shape"]))
        lines.append(f"| {qtype} | {shape} | {layer['diffusers'] * 1e3:.1f} | {layer['diffusers_cast'] * 1e3:.1f} | "
                     f"{layer['ours'] * 1e3:.1f} | {layer['diffusers'] / layer['ours']:.1f}x "
                     f"({layer['diffusers_cast'] / layer['ours']:.1f}x) | {layer['ours_out'] * 1e3:.1f} | "
                     f"{layer['diffusers'] / layer['ours_out']:.1f}x "
                     f"({layer['diffusers_cast'] / layer['ours_out']:.1f}x) |")
    lines += ["", "Crossover behind `DENSE_FROM_ROWS` (gguf_dequant/integrations/diffusers.py): one 3072 x 3072 layer, "
              "ms for the fused product (`gguf_dequant.linear`) / dequantize into a reused buffer + `F.linear`, "
              "best of 3:", "", "| type | compute dtype | " + " | ".join(f"{r} rows" for r in CROSSOVER_ROWS) + " |",
              "|---|---|" + "---:|" * len(CROSSOVER_ROWS)]
    for qtype in TYPES:
        for dtype in ("bfloat16", "float16", "float32"):
            cells = [f"{f * 1e3:.1f} / {d * 1e3:.1f}" + (" *" if d < f else "")
                     for q, dt, r, f, d in crossover if q == qtype and dt == dtype]
            lines.append(f"| {qtype} | {dtype} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: the dense path is faster."]
    forward = ", ".join(f"{q} {t['forward_s'] / o['forward_s']:.2f}x" for q, _, t, o in rows)
    layer = ", ".join(f"{q} {t['layer']['diffusers'] / t['layer']['ours']:.1f}x (new tensor), "
                      f"{t['layer']['diffusers'] / t['layer']['ours_out']:.1f}x (reused buffer)" for q, _, t, _ in rows)
    memory = ", ".join(f"{q} {o['forward_peak'] / t['forward_peak']:.2f}x" for q, _, t, o in rows)
    lines += ["", f"Goals: one forward >= 2x faster -> {forward}; one layer's dequantization >= 10x faster than "
              f"`dequantize_gguf_tensor` -> {layer}; peak RSS during the forward <= diffusers' own -> {memory}.", "",
              f"Backend: {rows[0][3]['backend']}.", "",
              f"Machine: Linux {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), torch "
              f"{torch.__version__} ({THREADS} threads), diffusers {diffusers.__version__}; load average (1 min) "
              f"{load_start:.1f} at the start and {load_end:.1f} at the end (the run itself adds about 2 on 2 "
              f"cores: more means other jobs shared them). Date {time.strftime('%Y-%m-%d', time.gmtime(started))}; "
              f"run time {time.time() - started:.0f} s.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
