"""Peak memory and wall time of `gguf-dequant convert` on a >= 1 GB GGUF file, next to transformers' legacy path.

    python benchmarks/memory.py [--gib 1.0] [--dtypes bfloat16,float32] [--workdir DIR] [--keep]
                                [--output benchmarks/MEMORY.md]

1. Writes a GGUF file of random Q4_K blocks (finite scales) in llama-8B-like tensor shapes, streaming tensor
   by tensor, until it holds at least ``--gib`` GiB.
2. Runs, each in its own subprocess, and records the child's peak RSS (``os.wait4`` rusage) and wall time:
   - ``gguf-dequant info FILE`` (the fixed overhead: Python, torch, the kernel build, the header);
   - ``gguf-dequant convert FILE OUT.safetensors --dtype D`` for each ``--dtypes`` entry;
   - transformers' legacy path, as ``load_gguf_checkpoint`` did it: ``GGUFReader`` then, per tensor,
     ``gguf.quants.dequantize`` -> ``torch.from_numpy(np.copy(w))``, every float32 tensor kept in memory.
3. Appends the figures, with the machine described, to ``benchmarks/MEMORY.md``.

The input file is in the page cache for every run (it was just written), so the figures compare the
conversion work, not disk reads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# llama-3-8B-like shapes (logical, rows x cols): one layer's attention and MLP weights.
LAYER = [("attn_q", (4096, 4096)), ("attn_k", (1024, 4096)), ("attn_v", (1024, 4096)),
         ("attn_output", (4096, 4096)), ("ffn_gate", (14336, 4096)), ("ffn_up", (14336, 4096)),
         ("ffn_down", (4096, 14336))]

LEGACY = r"""
import sys, time
import gguf, numpy as np, torch
t0 = time.perf_counter()
reader = gguf.GGUFReader(sys.argv[1])
state = {}
for t in reader.tensors:  # transformers' load_gguf_checkpoint before the packed-weights path
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    state[t.name] = torch.from_numpy(np.copy(w))
n = sum(v.numel() for v in state.values())
print(f"{len(state)} tensors, {n} float32 elements held, {time.perf_counter() - t0:.2f} s", file=sys.stderr)
"""


def write_file(path: Path, gib: float) -> tuple[int, int, int]:
    """Random Q4_K file of at least ``gib`` GiB; returns (tensors, elements, largest tensor elements)."""
    import gguf

    from gguf_dequant import testing
    from gguf_dequant.types import resolve

    t = resolve("Q4_K")
    rng = np.random.default_rng(0)
    plan, total, layer = [], 0, 0
    while total < gib * 2**30:
        for name, (rows, cols) in LAYER:
            plan.append((f"blk.{layer}.{name}.weight", rows, cols))
            total += rows * cols // t.block_elems * t.block_bytes
        layer += 1
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("memory-benchmark-random-q4_k")
    for name, rows, cols in plan:
        nbytes = rows * cols // t.block_elems * t.block_bytes
        w.add_tensor_info(name, (rows, cols // t.block_elems * t.block_bytes), np.dtype(np.uint8), nbytes,
                          raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, rows, cols in plan:  # one tensor in memory at a time
        raw = testing.random_blocks(t, rows * cols // t.block_elems, rng).reshape(rows, -1)
        w.write_tensor_data(raw)
    w.close()
    elements = sum(r * c for _, r, c in plan)
    return len(plan), elements, max(r * c for _, r, c in plan)


def measure(cmd: list[str], env=None) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS bytes, return code, stderr tail) of one subprocess."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    # Read the pipes on the side so that the child never blocks, then wait4 for its own rusage.
    import threading

    chunks = {"out": b"", "err": b""}

    def drain(stream, key):
        chunks[key] = stream.read()

    threads = [threading.Thread(target=drain, args=(proc.stdout, "out")),
               threading.Thread(target=drain, args=(proc.stderr, "err"))]
    for th in threads:
        th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    for th in threads:
        th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = (chunks["out"] + chunks["err"]).decode(errors="replace").strip().splitlines()[-1:]
    return wall, usage.ru_maxrss * 1024, proc.returncode, tail[0] if tail else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of the GGUF file (default 1 GiB)")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--workdir", type=Path, default=None, help="where the big files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the GGUF and safetensors files")
    ap.add_argument("--skip-legacy", action="store_true")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "MEMORY.md")
    args = ap.parse_args(argv)

    from throughput import machine

    tmp = tempfile.TemporaryDirectory(dir=args.workdir) if not args.keep else None
    work = Path(tmp.name) if tmp else (args.workdir or Path(tempfile.mkdtemp()))
    src = work / "random-q4_k.gguf"
    t0 = time.perf_counter()
    n_tensors, elements, largest = write_file(src, args.gib)
    size = src.stat().st_size
    print(f"wrote {src}: {size / 1e9:.2f} GB, {n_tensors} Q4_K tensors, {elements:,} elements "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)

    cli = [sys.executable, "-m", "gguf_dequant"]
    rows = []
    wall, rss, rc, tail = measure(cli + ["info", str(src)])
    rows.append(("`gguf-dequant info` (fixed overhead: Python, torch, header)", "–", wall, rss, rc))
    print(f"info: {wall:.2f} s, peak RSS {rss / 2**20:.0f} MiB, rc {rc}", flush=True)
    for dtype in [d for d in args.dtypes.split(",") if d]:
        out = work / f"out-{dtype}.safetensors"
        wall, rss, rc, tail = measure(cli + ["convert", str(src), str(out), "--dtype", dtype, "--no-progress"])
        itemsize = 4 if dtype == "float32" else 2
        rows.append((f"`gguf-dequant convert --dtype {dtype}`", f"{elements * itemsize / 2**30:.2f} GiB", wall, rss, rc))
        print(f"convert {dtype}: {wall:.2f} s, peak RSS {rss / 2**20:.0f} MiB, rc {rc}; {tail}", flush=True)
        if rc == 0:
            out.unlink()
    if not args.skip_legacy:
        wall, rss, rc, tail = measure([sys.executable, "-c", LEGACY, str(src)])
        rows.append(("legacy path: gguf-py dequantize, all float32 held (transformers' old loader)",
                     f"{elements * 4 / 2**30:.2f} GiB (in memory)", wall, rss, rc))
        print(f"legacy: {wall:.2f} s, peak RSS {rss / 2**20:.0f} MiB, rc {rc}; {tail}", flush=True)
    if tmp:
        tmp.cleanup()

    base = rows[0][3]
    largest_bf16, largest_f32 = largest * 2, largest * 4
    text = []
    if not args.output.exists():
        text += ["# Peak memory of whole-file conversion", "",
                 "Generated by `python benchmarks/memory.py`: a GGUF file of random Q4_K blocks (llama-8B-like "
                 "tensor shapes) is converted to safetensors by `gguf-dequant convert` in a subprocess, and "
                 "loaded the way transformers' legacy GGUF path did (gguf-py dequantization of every tensor to "
                 "float32, all held in memory). Peak RSS is the child's `ru_maxrss` (`os.wait4`); the input is "
                 "in the page cache for every run. The claim checked: convert's peak is about the fixed "
                 "overhead plus one output tensor, independent of the model size.", ""]
    import gguf_dequant

    text += [f"## {datetime.datetime.now().isoformat(timespec='minutes')}", "",
             f"Machine: {machine()}.", "",
             f"Backend for the CPU: {' - '.join(gguf_dequant.explain('cpu'))}.", "",
             f"File: {size / 1e9:.2f} GB ({size / 2**30:.2f} GiB), {n_tensors} Q4_K tensors, {elements:,} elements; "
             f"largest tensor {largest:,} elements = {largest_bf16 / 2**20:.0f} MiB bf16 / "
             f"{largest_f32 / 2**20:.0f} MiB f32.", "",
             "| run | output | wall s | peak RSS MiB | peak − fixed overhead MiB | rc |",
             "|---|---|---:|---:|---:|---:|"]
    for what, output, wall, rss, rc in rows:
        text.append(f"| {what} | {output} | {wall:.1f} | {rss / 2**20:.0f} | "
                    f"{(rss - base) / 2**20:.0f} | {rc} |")
    text.append("")
    with open(args.output, "a") as f:
        f.write("\n".join(text) + "\n")
    print(f"appended to {args.output}")
    return 0 if all(r[4] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
