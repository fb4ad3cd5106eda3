"""Metal throughput on a Mac: every type x output dtype, GB/s of total traffic next to the chip's peak.

    python benchmarks/mps_bandwidth.py [--kernel-build DIR] [--output benchmarks/MPS_RESULTS.md]

Uses the built Hub kernel (--kernel-build, a kernel-builder build/ directory) when given, else the
run-time Metal path (torch.mps.compile_shader). Traffic = bytes read + bytes written. Exits 0 with a
message where MPS is unavailable.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from gguf_dequant import metal_jit
from gguf_dequant.types import SUPPORTED

# Apple's unified-memory bandwidth in GB/s (spec figures as widely reported; consumers.md section 8).
PEAK_GBPS = {
    "Apple M1": 68.25, "Apple M1 Pro": 204.8, "Apple M1 Max": 409.6, "Apple M1 Ultra": 800,
    "Apple M2": 102.4, "Apple M2 Pro": 200, "Apple M2 Max": 400, "Apple M2 Ultra": 800,
    "Apple M3": 102.4, "Apple M3 Pro": 153.6, "Apple M3 Max": 400, "Apple M3 Ultra": 819,
    "Apple M4": 120, "Apple M4 Pro": 273, "Apple M4 Max": 546, "Apple M5": 153,
}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def chip() -> str:
    try:
        return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def time_mps(fn, repeat: int) -> float:
    fn()
    torch.mps.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        torch.mps.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-build", type=Path, default=None)
    ap.add_argument("--elements", type=int, default=1 << 24)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--output", type=Path, default=Path(__file__).with_name("MPS_RESULTS.md"))
    args = ap.parse_args(argv)
    if not torch.backends.mps.is_available():
        print("MPS is not available on this machine: nothing to measure (skipped).")
        return 0
    if args.kernel_build:
        import kernels

        k = kernels.get_local_kernel(args.kernel_build, backend="metal")
        run, path = (lambda b, t, d, o: k.dequantize(b, t.id, d, out=o)), "built kernel"
    else:
        run, path = (lambda b, t, d, o: metal_jit.dequantize(b, t, d, out=o)), "run-time Metal path"
    name = chip()
    peak = next((v for k_, v in sorted(PEAK_GBPS.items(), key=lambda kv: -len(kv[0])) if name.startswith(k_)), None)
    lines = [f"# Metal throughput ({path})", "", f"Chip: {name}; peak bandwidth: {peak or 'unknown'} GB/s; "
             f"torch {torch.__version__}; {args.elements:,} elements per run, best of {args.repeat}.", "",
             "| type | " + " | ".join(f"{s} GB/s (% peak)" for s in DTYPES) + " |",
             "|---|" + "---:|" * len(DTYPES)]
    for t in SUPPORTED.values():
        n = args.elements - args.elements % max(t.block_elems, 4096)
        blob = torch.randint(0, 256, (n // t.block_elems * t.block_bytes,), dtype=torch.uint8, device="mps")
        cells = []
        for dtype in DTYPES.values():
            out = torch.empty(n, dtype=dtype, device="mps")
            seconds = time_mps(lambda: run(blob, t, dtype, out), args.repeat)
            gbps = (blob.numel() + out.numel() * out.element_size()) / seconds / 1e9
            cells.append(f"{gbps:.1f}" + (f" ({100 * gbps / peak:.0f}%)" if peak else ""))
        lines.append(f"| {t.name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
