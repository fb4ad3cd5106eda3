"""Metal compute on packed weights on a Mac: weight bytes read per second against the chip's peak.

    python benchmarks/mps_matmul.py [--kernel-build DIR] [--ggml] [--output benchmarks/MPS_MATMUL.md]

Weights are cold by default: each timed call uses the next of enough copies of the weight to fill more than
the chip's caches (--cache-mb, default 256: above any M-series system level cache), as a model's layers are
when decoding; hot (the same copy every call, cache-resident: MLX's hot figure was 1.7x its real bandwidth)
is the second figure. For each type and weight shape (N x K), with bfloat16 activations:
- M = 1 time and weight GB/s (bytes of the packed weight / time) with % of the chip's peak (goal >= 85%),
  cold, and M = 1 hot;
- M = 8 / M = 1 time (goal <= 1.3) and M = 9 / M = 8 (the switch to the tiled kernel: no step wanted);
- M = 1 and M = 8 against dequantize + torch.matmul on MPS (the same weight dequantized to bf16 each call);
- when --ggml is given and kernels can load it, ggml-quantization's mul_mat_vec at M = 1 and M = 8;
then mul_mat_id with 64 experts, 8 used per token, T = 1 and T = 32, against a loop of dequantize + matmul.

Uses the built Hub kernel (--kernel-build, a kernel-builder build/ directory) when given, else the run-time
Metal path (torch.mps.compile_shader). Exits 0 with a message where MPS is unavailable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from gguf_dequant import metal_jit, testing
from gguf_dequant.types import resolve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mps_bandwidth import PEAK_GBPS, chip, time_mps  # noqa: E402

TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "MXFP4")
SHAPES = ((4096, 4096), (14336, 4096))  # (N, K)


def packed(qtype, rows: int, k: int, rng, experts: int | None = None) -> torch.Tensor:
    t = resolve(qtype)
    n = rows * (experts or 1)
    raw = testing.random_blocks(t, n * (k // t.block_elems), rng).reshape(n, -1)
    blocks = torch.from_numpy(raw).to("mps")
    return blocks.reshape(experts, rows, -1) if experts else blocks


def copies_for(nbytes: int, cache_mb: int) -> int:
    """Copies of an nbytes weight that together exceed the caches (at least 2)."""
    return max(2, -(-cache_mb * 2**20 // max(nbytes, 1)) + 1)


def rotating(fn, copies: list):
    """fn(copy) over the copies in turn, one per call: every call reads its weight from DRAM."""
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(copies)
        return fn(copies[state["i"]])

    return call


def backend(kernel_build: Path | None):
    """(linear, mul_mat_id, dequantize, description)."""
    if kernel_build:
        import kernels

        k = kernels.get_local_kernel(kernel_build, backend="metal")
        return (lambda x, b, t: k.linear(x, b, t.id), lambda b, x, i, t, n: k.mul_mat_id(b, x, i, t.id, n),
                lambda b, t, d: k.dequantize(b, t.id, d), "built kernel")
    return (lambda x, b, t: metal_jit.linear(x, b, t), lambda b, x, i, t, n: metal_jit.mul_mat_id(b, x, i, t, n),
            lambda b, t, d: metal_jit.dequantize(b, t, d), "run-time Metal path")


def ggml_quantization():
    try:
        import kernels

        return kernels.get_kernel("ggml-org/ggml-quantization", version=1)
    except Exception as e:  # not installed, no network, unsupported torch: the column says so
        print(f"ggml-quantization unavailable: {e}")
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-build", type=Path, default=None)
    ap.add_argument("--ggml", action="store_true", help="also time ggml-quantization's mul_mat_vec")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--cache-mb", type=int, default=256, help="bytes of weight copies to rotate through (cold)")
    ap.add_argument("--output", type=Path, default=Path(__file__).with_name("MPS_MATMUL.md"))
    args = ap.parse_args(argv)
    if not torch.backends.mps.is_available():
        print("MPS is not available on this machine: nothing to measure (skipped).")
        return 0
    linear, mul_mat_id, dequantize, path = backend(args.kernel_build)
    ggml = ggml_quantization() if args.ggml else None
    name = chip()
    peak = next((v for k_, v in sorted(PEAK_GBPS.items(), key=lambda kv: -len(kv[0])) if name.startswith(k_)), None)
    rng = np.random.default_rng(0)
    lines = [f"# Metal compute on packed weights ({path})", "",
             f"Chip: {name}; peak bandwidth: {peak or 'unknown'} GB/s; torch {torch.__version__}; bfloat16 "
             f"activations; best of {args.repeat}. Weight GB/s = packed weight bytes / time. Cold: each call reads "
             f"the next of copies of the weight totalling more than {args.cache_mb} MB; hot: the same copy.", "",
             "| type | N x K | M=1 ms cold | weight GB/s cold (% peak) | M=1 ms hot | M=8 / M=1 | M=9 / M=8 | "
             "dequant+matmul M=1 ms | M=8 ms | ggml-quantization M=1 ms | M=8 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tname in TYPES:
        t = resolve(tname)
        for n, k in SHAPES:
            blocks = packed(t, n, k, rng)
            copies = [blocks] + [blocks.clone() for _ in range(copies_for(blocks.numel(), args.cache_mb) - 1)]
            x = {m: torch.randn(m, k, device="mps", dtype=torch.bfloat16) for m in (1, 8, 9)}
            ms = {m: 1e3 * time_mps(rotating(lambda b, m=m: linear(x[m], b, t), copies), args.repeat) for m in x}
            hot = 1e3 * time_mps(lambda: linear(x[1], blocks, t), args.repeat)
            dense = {m: 1e3 * time_mps(rotating(lambda b, m=m: x[m] @ dequantize(b, t, torch.bfloat16).T, copies),
                                       args.repeat) for m in (1, 8)}
            gbps = blocks.numel() / (ms[1] / 1e3) / 1e9
            cells = [f"{ms[1]:.3f}", f"{gbps:.0f}" + (f" ({100 * gbps / peak:.0f}%)" if peak else ""), f"{hot:.3f}",
                     f"{ms[8] / ms[1]:.2f}", f"{ms[9] / ms[8]:.2f}", f"{dense[1]:.3f}", f"{dense[8]:.3f}"]
            if ggml is not None and t.id in ggml.GEMV_TYPES:
                g = {m: 1e3 * time_mps(rotating(lambda b, m=m: ggml.mul_mat_vec(b, x[m], t.id, n), copies),
                                       args.repeat) for m in (1, 8)}
                cells += [f"{g[1]:.3f}", f"{g[8]:.3f}"]
            else:
                cells += ["n/a", "n/a"]
            lines.append(f"| {t.name} | {n} x {k} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)

    lines += ["", "mul_mat_id: 64 experts of 1536 x 2048, 8 used per token, cold, against a loop of dequantize "
              "+ matmul over the experts each token uses (hot).", "",
              "| type | T | mul_mat_id ms | loop ms |", "|---|---:|---:|---:|"]
    for tname in ("Q4_K", "IQ4_XS", "MXFP4"):
        t = resolve(tname)
        experts = packed(t, 1536, 2048, rng, experts=64)
        copies = [experts] + [experts.clone() for _ in range(copies_for(experts.numel(), args.cache_mb) - 1)]
        for n_tok in (1, 32):
            x = torch.randn(n_tok, 2048, device="mps", dtype=torch.bfloat16)
            ids = torch.stack([torch.randperm(64)[:8] for _ in range(n_tok)]).to(torch.int32).to("mps")
            fused = 1e3 * time_mps(rotating(lambda b: mul_mat_id(b, x, ids, t, 1536), copies), args.repeat)
            used = sorted(set(ids.cpu().flatten().tolist()))

            def loop():
                for e in used:
                    x @ dequantize(experts[e], t, torch.bfloat16).T

            looped = 1e3 * time_mps(loop, max(3, args.repeat // 5))
            lines.append(f"| {t.name} | {n_tok} | {fused:.3f} | {looped:.3f} |")
            print(lines[-1], flush=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
