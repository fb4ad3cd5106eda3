import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from gguf_dequant.types import SUPPORTED

# The shader harness (harness/) is development tooling beside the package, imported from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

settings.register_profile(
    "default", max_examples=int(os.environ.get("GGUF_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("default")

ALL_TYPES = [t.name for t in SUPPORTED.values()]
OUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["f32", "f16", "bf16"]


def skip_unless_built(why: str | None) -> None:
    """Skip when a llama.cpp build a test needs is missing (``why`` says which), or fail under
    GGUF_REQUIRE_GGML=1 (CI, where tools/setup.sh built everything)."""
    if why:
        if os.environ.get("GGUF_REQUIRE_GGML") == "1":
            pytest.fail(f"GGUF_REQUIRE_GGML=1 but {why}")
        pytest.skip(why)


def implemented(name: str) -> bool:
    """True once a type's reference module exists (lets the suite run while types are being added)."""
    import importlib.util
    return importlib.util.find_spec(f"gguf_dequant.reference.{name.lower()}") is not None


@pytest.fixture(params=ALL_TYPES)
def qtype(request):
    return request.param


@pytest.fixture(params=OUT_DTYPES, ids=DTYPE_IDS)
def out_dtype(request):
    return request.param
