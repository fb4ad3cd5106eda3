"""Loading the locally built Hub package exactly as users load it (kernels.get_local_kernel)."""

import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _load():
    import kernels

    from gguf_dequant import local_build

    # GGUF_DEQUANT_BUILD_DIR points at another build root (e.g. the sanitizer build's).
    build_root = Path(os.environ.get("GGUF_DEQUANT_BUILD_DIR", ROOT / "build"))
    variant = build_root / local_build.variant_name()
    if not (variant / "metadata.json").exists():
        return None, f"no local CPU build at {variant} (run python -m gguf_dequant.local_build)"
    return kernels.get_local_kernel(variant, backend="cpu"), ""


def hub_kernel():
    """The module kernels.get_local_kernel returns; skips the test when there is no local build."""
    kernel, why = _load()
    if kernel is None:
        pytest.skip(why)
    return kernel
