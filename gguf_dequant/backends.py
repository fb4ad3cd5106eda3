"""Backend choice behind ``gguf_dequant.dequantize`` and ``gguf_dequant.linear``: the fastest correct path
for the tensor's device.

Order, per device type:

- ``cpu``: the compiled kernel build, i.e. the local build of the Hub package in ``<repo>/build/<variant>/``
  (``python -m gguf_dequant.local_build``, loaded with ``kernels.get_local_kernel``), or the Hub kernel
  ``kernels-community/gguf-dequant`` (pinned ``version=1``) when ``GGUF_DEQUANT_HUB=1``; else the reference.
- ``mps``: the Hub kernel (unless ``GGUF_DEQUANT_HUB=0``), else the run-time Metal path (``metal_jit``),
  else the reference.
- anything else (cuda, xpu, ...): the pure-torch reference.

``GGUF_DEQUANT_BACKEND`` (environment) or ``backend=`` (keyword) forces one of ``"kernel"``,
``"metal_jit"``, ``"reference"``; a forced backend that cannot serve the tensor raises
:class:`BackendUnavailableError` with the reason. ``explain(device)`` says which backend serves a device
and why.

Never silently wrong: before a compiled backend serves a type for the first time, it decodes a few random
blocks of that type and must match the reference bit for bit; a type that does not is served by the
reference, and ``explain(device, qtype)`` shows why. A build that fails to load is recorded the same way.
``linear`` makes the same choice; a backend without a ``linear`` (an older kernel build, a run-time Metal
path without one) gives way to the reference, or raises when it was forced.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from . import reference
from .types import QuantType, resolve

__all__ = ["dequantize", "linear", "explain", "available_backends", "BACKENDS", "BackendUnavailableError",
           "ENV_BACKEND", "ENV_HUB", "HUB_REPO", "HUB_VERSION", "reset"]

BACKENDS = ("kernel", "metal_jit", "reference")
ENV_BACKEND = "GGUF_DEQUANT_BACKEND"
ENV_HUB = "GGUF_DEQUANT_HUB"
ENV_BUILD_DIR = "GGUF_DEQUANT_BUILD_DIR"  # another build root than <repo>/build (as tests/hub.py)
HUB_REPO = "kernels-community/gguf-dequant"
HUB_VERSION = 1
ROOT = Path(__file__).resolve().parents[1]

_lock = threading.RLock()
_kernels: dict[str, tuple[object | None, str]] = {}  # device type -> (module or None, reason)
_verified: dict[tuple[str, str, int], str | None] = {}  # (backend, device type, type id) -> None ok / reason


class BackendUnavailableError(RuntimeError):
    """A forced backend cannot serve the requested device or type."""


def reset() -> None:
    """Forget cached loads and self-checks (tests; after building the kernel in the same process)."""
    with _lock:
        _kernels.clear()
        _verified.clear()


def _device_type(device) -> str:
    if device is None:
        return "cpu"
    if isinstance(device, torch.Tensor):
        return device.device.type
    return torch.device(device).type


def _hub_wanted(device_type: str) -> bool:
    value = os.environ.get(ENV_HUB, "").strip()
    if device_type == "cpu":
        return value == "1"  # opt-in: the Hub needs the network
    return value != "0"


def _local_variant() -> Path:
    from . import local_build

    build_root = Path(os.environ.get(ENV_BUILD_DIR, ROOT / "build"))
    return build_root / local_build.variant_name()


def _load_kernel_uncached(device_type: str) -> tuple[object | None, str]:
    if device_type not in ("cpu", "mps"):
        return None, f"no compiled kernel build exists for {device_type} devices"
    try:
        import kernels
    except ImportError as e:
        return None, f"the `kernels` package is not installed ({e})"
    errors = []
    if device_type == "cpu":
        try:
            variant = _local_variant()
        except Exception as e:  # noqa: BLE001 - reported through explain()
            variant, why = None, f"cannot name the local build variant: {e}"
            errors.append(why)
        if variant is not None:
            if (variant / "metadata.json").exists():
                try:
                    module = kernels.get_local_kernel(variant, backend="cpu")
                    if "cpu" in module.supported_devices():
                        return module, f"local kernel build {variant}"
                    errors.append(f"local kernel build {variant} has no CPU kernels")
                except Exception as e:  # noqa: BLE001
                    errors.append(f"local kernel build {variant} failed to load: {type(e).__name__}: {e}")
            else:
                errors.append(f"no local kernel build at {variant} (python -m gguf_dequant.local_build)")
    if _hub_wanted(device_type):
        try:
            module = kernels.get_kernel(HUB_REPO, version=HUB_VERSION)
            if device_type in module.supported_devices():
                return module, f"Hub kernel {HUB_REPO} (version {HUB_VERSION})"
            errors.append(f"Hub kernel {HUB_REPO} has no {device_type} kernels in this build")
        except Exception as e:  # noqa: BLE001
            errors.append(f"Hub kernel {HUB_REPO} (version {HUB_VERSION}) failed to load: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    else:
        errors.append(f"Hub kernel not tried ({ENV_HUB}=1 enables it)" if device_type == "cpu"
                      else f"Hub kernel disabled by {ENV_HUB}=0")
    return None, "; ".join(errors)


def _load_kernel(device_type: str) -> tuple[object | None, str]:
    with _lock:
        if device_type not in _kernels:
            _kernels[device_type] = _load_kernel_uncached(device_type)
        return _kernels[device_type]


def _metal_jit_status(device_type: str) -> tuple[bool, str]:
    if device_type != "mps":
        return False, f"the run-time Metal path runs only on mps tensors, not {device_type}"
    from . import metal_jit

    if metal_jit.available():
        offered = ", ".join(str(d).removeprefix("torch.") for d in metal_jit.dtypes())
        return True, (f"run-time Metal path (torch.mps.compile_shader, MSL {metal_jit.msl_version() / 100:.1f}: "
                      f"{offered})")
    return False, "torch.mps.compile_shader is not available (needs torch >= 2.7 on a Mac with MPS)"


def _backend_fn(name: str, device_type: str):
    if name == "kernel":
        module, _ = _load_kernel(device_type)
        return lambda blob, t, dtype, out: module.dequantize(blob, t.id, dtype, out=out)
    if name == "metal_jit":
        from . import metal_jit

        return lambda blob, t, dtype, out: metal_jit.dequantize(blob, t, dtype, out=out)
    return lambda blob, t, dtype, out: reference.dequantize(blob, t, dtype, out=out)


def _status(name: str, device_type: str) -> tuple[bool, str]:
    """Can backend ``name`` serve this device type at all, and the reason."""
    if name == "reference":
        return True, "pure-torch reference (runs on any device)"
    if name == "kernel":
        module, why = _load_kernel(device_type)
        return module is not None, why
    if name == "metal_jit":
        return _metal_jit_status(device_type)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _self_check(name: str, device_type: str, t: QuantType, device) -> str | None:
    """None when backend ``name`` decodes type ``t`` bit-exactly like the reference, else the reason."""
    key = (name, device_type, t.id)
    with _lock:
        if key in _verified:
            return _verified[key]
    from .blocks import bits_mismatch, random_blocks

    why = None
    try:
        if name == "kernel":
            module, _ = _load_kernel(device_type)
            if t.id not in module.supported_types():
                why = f"the kernel build does not support {t.name}"
        if why is None:
            raw = random_blocks(t, 8, np.random.default_rng(1234 + t.id))
            blob = torch.from_numpy(raw.reshape(-1)).to(device)
            got = _backend_fn(name, device_type)(blob, t, torch.float32, None)
            want = reference.dequantize(blob.cpu(), t, torch.float32)
            if tuple(got.shape) != tuple(want.shape) or bits_mismatch(got.cpu(), want).any():
                why = f"the {name} backend gave results different from the reference for {t.name} in its self-check"
    except Exception as e:  # noqa: BLE001 - the type is served by the reference, explain() says why
        why = f"the {name} backend failed its self-check for {t.name}: {type(e).__name__}: {e}"
    with _lock:
        _verified[key] = why
    return why


def _forced(backend: str | None) -> str | None:
    name = backend if backend is not None else os.environ.get(ENV_BACKEND, "").strip() or None
    if name is None or name == "auto":
        return None
    name = name.strip().lower()
    if name not in BACKENDS:
        source = "backend=" if backend is not None else f"{ENV_BACKEND}="
        raise ValueError(f"{source}{name!r} is not a backend; choose one of {', '.join(BACKENDS)} (or auto)")
    return name


def _choose(device, qtype=None, backend: str | None = None) -> tuple[str, str]:
    device_type = _device_type(device)
    t = resolve(qtype) if qtype is not None else None
    forced = _forced(backend)
    if forced is not None:
        ok, why = _status(forced, device_type)
        if not ok:
            raise BackendUnavailableError(f"backend {forced!r} was forced but cannot serve {device_type}: {why}")
        if t is not None and forced != "reference":
            bad = _self_check(forced, device_type, t, device)
            if bad is not None:
                raise BackendUnavailableError(f"backend {forced!r} was forced but cannot serve {t.name}: {bad}")
        source = "backend= keyword" if backend is not None else f"{ENV_BACKEND} environment variable"
        return forced, f"forced by the {source}: {why}"
    skipped = []
    for name in ("kernel", "metal_jit"):
        ok, why = _status(name, device_type)
        if not ok:
            skipped.append(f"{name}: {why}")
            continue
        if t is not None:
            bad = _self_check(name, device_type, t, device)
            if bad is not None:
                skipped.append(f"{name}: {bad}")
                continue
        return name, why
    return "reference", "pure-torch reference; " + "; ".join(skipped)


def explain(device="cpu", qtype=None, *, backend: str | None = None) -> tuple[str, str]:
    """``(backend_name, reason)``: which backend serves ``device`` (a device, string or tensor) and why.

    With ``qtype`` the answer is for that type (a compiled backend that lacks it or failed its self-check
    for it gives way to the next one). Raises :class:`BackendUnavailableError` when a forced backend cannot
    serve the device.
    """
    return _choose(device, qtype, backend)


def available_backends(device="cpu") -> list[str]:
    """Backends that can serve ``device``, fastest first (the reference always can)."""
    device_type = _device_type(device)
    return [name for name in BACKENDS if _status(name, device_type)[0]]


def dequantize(blob, qtype, dtype: torch.dtype = torch.float32, *, out: torch.Tensor | None = None,
               backend: str | None = None) -> torch.Tensor:
    """Dequantize raw GGUF blocks with the fastest correct backend for ``blob``'s device.

    blob: uint8 tensor (or numpy array), 1-D raw bytes or N-D with the last dimension in bytes (GGUFReader's
    layout). qtype: int id, case-insensitive name or ``gguf.GGMLQuantizationType``. dtype: torch.float32,
    torch.float16 or torch.bfloat16. out: optional preallocated contiguous result. backend: force
    ``"kernel"``, ``"metal_jit"`` or ``"reference"`` (default: ``$GGUF_DEQUANT_BACKEND``, else automatic).
    Every backend returns the same bits as :func:`gguf_dequant.reference.dequantize`.
    """
    blob, t = reference.check_blob(blob, qtype, dtype)
    name, _ = _choose(blob.device, t, backend)
    name = _with_dtype(name, t, backend, dtype)
    if out is not None:
        reference._check_out(out, reference.output_shape(tuple(blob.shape), t), dtype, blob.device)
    if name != "reference" and not blob.is_contiguous():
        blob = blob.contiguous()
    return _backend_fn(name, blob.device.type)(blob, t, dtype, out)


def _with_dtype(name: str, t: QuantType, backend: str | None, *dtypes: torch.dtype) -> str:
    """The run-time Metal path gives way to the reference for dtypes this Mac's library lacks (bfloat16 on
    MSL 3.0), unless it was forced (then it raises, naming the dtype)."""
    if name != "metal_jit" or _forced(backend) is not None:
        return name
    from . import metal_jit

    return name if all(metal_jit.supports(t, d) for d in dtypes) else "reference"


def _linear_fn(name: str, device_type: str):
    """The ``linear`` of backend ``name``, or None when that backend has none."""
    if name == "kernel":
        return getattr(_load_kernel(device_type)[0], "linear", None)
    if name == "metal_jit":
        from . import metal_jit

        return getattr(metal_jit, "linear", None)
    return reference.linear


def linear(x: torch.Tensor, blocks, qtype, bias: torch.Tensor | None = None, *,
           backend: str | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` on the packed GGUF weight ``blocks`` with the fastest correct backend for x's device.

    x: ``(..., in_features)`` float32/float16/bfloat16; blocks: uint8 ``(out_features, bytes_per_row)``
    (GGUFReader's layout, tensor or numpy array); bias: optional ``(out_features,)`` in float32 or x's dtype.
    Returns ``(..., out_features)`` in x's dtype: x exactly to float32, products and sums in float32, bias
    added in float32, one rounding (README, "Compute on packed weights"). backend: as for :func:`dequantize`.
    """
    blocks, t, _ = reference.check_linear(x, blocks, qtype, bias)
    name, _ = _choose(x.device, t, backend)
    name = _with_dtype(name, t, backend, x.dtype)
    fn = _linear_fn(name, x.device.type)
    if fn is None:
        if _forced(backend) is not None:
            raise BackendUnavailableError(f"backend {name!r} was forced but has no linear")
        fn = reference.linear
    return fn(x, blocks.contiguous(), t.id, bias)
