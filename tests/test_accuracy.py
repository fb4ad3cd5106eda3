"""Compute on packed weights on real layers: the largest |y - y_exact| / sum |w x| with float32 x stays below
1e-5 (issues 17 and 18; benchmarks/ACCURACY.md has every layer of the test models and every type), on the CPU
through the package's front door (mat-vec tier M = 1, 8; matrix tier M = 64) and on Metal in the harness
(M = 1, M = 16)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gguf_dequant
from gguf_dequant.reference import dequantize as reference_dequantize
from gguf_dequant.types import BY_NAME

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import GOAL, metal_linear, model_layers, normalized_error  # noqa: E402

from .conftest import skip_unless_built  # noqa: E402
from .transformers_models import builders_missing  # noqa: E402

LAYERS = [("lfm2-tiny", "Q4_K_M"), ("qwen35moe-tiny", "Q8_0")]


@pytest.fixture(scope="module", params=LAYERS, ids=lambda p: f"{p[0]}-{p[1]}")
def layers(request):
    skip_unless_built(builders_missing())
    out = []
    for name, qtype, raw in model_layers(*request.param):
        t = BY_NAME[qtype]
        w = reference_dequantize(torch.from_numpy(raw.reshape(-1)), t.id, torch.float32)
        out.append((name, qtype, raw, w.reshape(raw.shape[0], -1).numpy()))
    return out


def test_cpu_layers_within_goal(layers):
    rng = np.random.default_rng(0)
    for name, qtype, raw, w in layers:
        for m in (1, 8, 64):
            x = rng.standard_normal((m, w.shape[1])).astype(np.float32)
            y = gguf_dequant.linear(torch.from_numpy(x), torch.from_numpy(raw), qtype).numpy()
            err = normalized_error(y, w, x)
            assert err <= GOAL, f"{name} ({qtype}) M={m}: {err:.3g}"


def test_metal_layers_within_goal(layers):
    from harness import msl_harness

    if not msl_harness.available():
        pytest.skip("clang-19 is not installed")
    rng = np.random.default_rng(1)
    for name, qtype, raw, w in layers[:4]:
        for m in (1, 16):
            x = rng.standard_normal((m, w.shape[1])).astype(np.float32)
            err = normalized_error(metal_linear(qtype, raw, x), w, x)
            assert err <= GOAL, f"{name} ({qtype}) M={m}: {err:.3g}"
