"""Accuracy of compute on packed weights, written to benchmarks/ACCURACY.md.

    bash tools/setup.sh && python benchmarks/accuracy.py [--no-metal] [--output benchmarks/ACCURACY.md]

The measure (issues 17 and 18): for each output, |y - y_exact| / sum_k |w_k x_k|, where w is the decoded weight
(the exact values the blocks hold), x float32 activations (standard normal) and y_exact the float64 product; the
table gives the largest over every output of every layer. Goal: <= 1e-5 with float32 x (contract v2 allows n u
sum |w x| with n the kernel's stated number of roundings; the figure shows how far below it real layers are).

Weights: every 2-D quantized tensor (and each expert of the 3-D ones) of the transformers test models
(tests/transformers_models.py: llama.cpp's converter and quantizer on random checkpoints), and llama.cpp-quantized
standard normal weights (256 x 4096) of every type ggml quantizes without an importance matrix. Compared: ours on
the CPU (the local build, as ``get_local_kernel`` loads it) at M = 1 and M = 8 (mat-vec tier) and M = 64 (matrix
tier); ours on Metal in the harness (the test models' layers, M = 1 and M = 16); llama.cpp's ``ggml_mul_mat``
(AVX2 oracle build, and the native build), which quantizes float32 x to 8 bits first.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gguf_dequant import local_build  # noqa: E402
from gguf_dequant.reference import dequantize as reference_dequantize  # noqa: E402
from gguf_dequant.types import BY_NAME, FLOAT_TYPES  # noqa: E402

GOAL = 1e-5
CPU_ROWS = (1, 8, 64)
METAL_ROWS = (1, 16)
MODELS = {"lfm2-tiny": ["Q4_K_M", "Q3_K_M", "Q5_0", "Q8_0", "IQ4_XS"], "qwen35moe-tiny": ["Q4_K_M", "Q8_0"]}
NORMAL_SHAPE = (256, 4096)


def normalized_error(y: np.ndarray, w: np.ndarray, x: np.ndarray) -> float:
    """max over outputs of |y - y_exact| / sum |w x| (float64), for y (M, N), w (N, K), x (M, K)."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    exact = x64 @ w64.T
    scale = np.abs(x64) @ np.abs(w64).T
    return float((np.abs(y.astype(np.float64) - exact) / np.where(scale > 0, scale, 1.0)).max())


def model_layers(spec: str, ftype: str):
    """(tensor name, type name, (N, row bytes) uint8 blocks) of every quantized 2-D matrix of a test model."""
    import gguf

    from tests.transformers_models import build

    reader = gguf.GGUFReader(str(build(spec, ftype)))
    for t in reader.tensors:
        name = t.tensor_type.name
        if name not in BY_NAME or name in FLOAT_TYPES or len(t.shape) < 2:
            continue
        data = np.asarray(t.data)
        mats = data.reshape(-1, *data.shape[-2:]) if data.ndim == 3 else data[None]
        for e, m in enumerate(mats[:2]):  # two experts of a 3-D tensor are enough
            yield (f"{t.name}[{e}]" if data.ndim == 3 else t.name), name, np.array(m)  # writable


def normal_layers(oracle):
    """llama.cpp-quantized N(0, 1) weights of every type it quantizes without an importance matrix."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(NORMAL_SHAPE).astype(np.float32)
    for name, t in BY_NAME.items():
        if name in FLOAT_TYPES or oracle.requires_imatrix(t.id):
            continue
        try:
            raw = oracle.quantize(t.id, w)
        except Exception:  # a type this llama.cpp cannot quantize
            continue
        yield f"{name} {NORMAL_SHAPE[0]}x{NORMAL_SHAPE[1]}", name, np.ascontiguousarray(raw.reshape(NORMAL_SHAPE[0], -1))


def metal_linear(qtype: str, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    from harness import msl_harness, perf

    (res,) = msl_harness.dispatch_all([perf.ours_linear(qtype, raw, x)])
    return res.buffers[3].view(np.float32).reshape(x.shape[0], raw.shape[0])


def measure(k, ggmls: dict, layers, metal: bool, log=print) -> dict:
    """type -> {column: worst normalized error, "layers": count}."""
    rng = np.random.default_rng(1)
    worst: dict = {}
    for where, (layer, qtype, raw) in layers:
        t = BY_NAME[qtype]
        n, kdim = raw.shape[0], raw.shape[1] // t.block_bytes * t.block_elems
        w = reference_dequantize(torch.from_numpy(raw.reshape(-1)), t.id, torch.float32).reshape(n, kdim).numpy()
        x = rng.standard_normal((max(CPU_ROWS + METAL_ROWS), kdim)).astype(np.float32)
        row = worst.setdefault((where, qtype), {"layers": 0})
        row["layers"] += 1

        errors = {}

        def note(col, y, m):
            errors[col] = normalized_error(y, w, x[:m])
            row[col] = max(row.get(col, 0.0), errors[col])

        for m in CPU_ROWS:
            note(f"cpu_m{m}", k.linear(torch.from_numpy(x[:m]), torch.from_numpy(raw), t.id).numpy(), m)
        for label, g in ggmls.items():
            if g is not None:
                note(label, g.time_mul_mat(t.id, raw, kdim, x[:1], 1, 1)[1], 1)
        if metal:
            for m in METAL_ROWS:
                note(f"metal_m{m}", metal_linear(qtype, raw, x[:m]), m)
        log(f"{where} {layer} {qtype}: " + ", ".join(f"{c} {v:.2e}" for c, v in errors.items()))
    return worst


def write_markdown(worst: dict, path: Path, ggml_where: dict, metal: bool) -> None:
    cols = [f"cpu_m{m}" for m in CPU_ROWS] + ([f"metal_m{m}" for m in METAL_ROWS] if metal else []) + list(ggml_where)
    names = {**{f"cpu_m{m}": f"ours CPU M={m}" for m in CPU_ROWS},
             **{f"metal_m{m}": f"ours Metal (harness) M={m}" for m in METAL_ROWS},
             "native": "llama.cpp native M=1", "avx2": "llama.cpp AVX2 M=1"}
    ours = [c for c in cols if c.startswith(("cpu", "metal"))]
    worst_ours = max((v.get(c, 0.0) for v in worst.values() for c in ours), default=0.0)
    lines = [
        "# Accuracy of compute on packed weights",
        "",
        f"Generated by `python benchmarks/accuracy.py` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{platform.machine()}, torch {torch.__version__}. Largest |y - y_exact| / sum |w x| over every output of "
        "every layer (float64 exact product of the decoded weights; float32 x, standard normal). Goal of issues 17 "
        f"and 18: <= {GOAL:g} with float32 x. llama.cpp quantizes float32 x to 8 bits ({', '.join(f'{k}: {v}' for k, v in ggml_where.items())}).",
        "",
        f"**Worst of ours over every row: {worst_ours:.2e}** ({'meets' if worst_ours <= GOAL else 'misses'} the goal).",
        "",
        "| weights | type | layers | " + " | ".join(names[c] for c in cols) + " |",
        "|---|---|---:|" + "---:|" * len(cols),
    ]
    for (where, qtype), v in worst.items():
        cells = [f"{v[c]:.1e}" if c in v else "–" for c in cols]
        lines.append(f"| {where} | {qtype} | {v['layers']} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-metal", action="store_true", help="skip the harness runs of the Metal kernels")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "ACCURACY.md")
    args = ap.parse_args(argv)

    import kernels

    from gguf_dequant.oracles import ggml as oracle
    from matmul import load_ggml

    variant = ROOT / "build" / local_build.variant_name()
    if not (variant / "metadata.json").exists():
        print(f"no local build at {variant}: run python -m gguf_dequant.local_build", file=sys.stderr)
        return 1
    k = kernels.get_local_kernel(variant, backend="cpu")
    ggmls, where = {}, {}
    for label, env, default in (("native", "LLAMA_NATIVE_LIBDIR", ROOT / ".cache" / "llama-native" / "lib"),
                                ("avx2", "LLAMA_LIBDIR", ROOT / ".cache" / "llama" / "lib")):
        ggmls[label], where[label] = load_ggml(env, default)
    metal = not args.no_metal
    if metal:
        from harness import msl_harness

        metal = msl_harness.available()
    layers = [((f"{spec} {ftype}"), layer) for spec, ftypes in MODELS.items() for ftype in ftypes
              for layer in model_layers(spec, ftype)]
    worst = measure(k, ggmls, layers, metal)
    worst.update(measure(k, ggmls, [("llama.cpp-quantized N(0, 1)", layer) for layer in normal_layers(oracle)], False))
    write_markdown(worst, args.output, where, metal)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
