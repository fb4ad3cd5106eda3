"""Run diffusers' GGUF models on gguf-dequant.

diffusers (0.42) keeps a GGUF checkpoint's weights packed in ``GGUFLinear`` layers and, on every forward of every
layer, dequantizes the weight with a chain of torch ops (``dequantize_gguf_tensor``, half-precision arithmetic),
casts it to the compute dtype and calls ``F.linear``; its loader refuses the types that chain lacks. After
:func:`install_kernel`::

    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
    from gguf_dequant.integrations.diffusers import install_kernel

    install_kernel()
    model = FluxTransformer2DModel.from_single_file(
        "flux1-dev-Q4_K.gguf", quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
        torch_dtype=torch.bfloat16)

- ``GGUFLinear`` computes on this package (``gguf_dequant.linear`` / ``gguf_dequant.dequantize``: the kernel build
  where found, the run-time Metal path on MPS, the reference otherwise; ``gguf_dequant.explain(device)`` says which):
  up to :data:`MAT_VEC_ROWS` rows of input with the fused product on the packed weight (x exactly to float32, sums
  in float32, one rounding); above, with whichever is faster for the device and compute dtype: that product, or
  the weight dequantized straight to the compute dtype (one rounding per weight, no float32 copy) and ``F.linear``
  (:data:`DENSE_FROM_ROWS`: from how many rows the second wins, measured in ``benchmarks/DIFFUSERS.md``).
- The loader accepts every storage type this package decodes and gguf-py reads (diffusers refuses 12 of them:
  MXFP4, NVFP4, TQ1_0, TQ2_0, Q1_0 and the IQ1/IQ2/IQ3 family; gguf-py 0.19 cannot read Q2_0); ``dequantize_gguf_tensor`` (used for modules kept
  unquantized and by the LoRA loaders) returns the exact float32 values; the "dequantize the whole model" path
  (``model.dequantize()``, ``_dequantize_gguf_and_restore_linear``) decodes each weight straight to its compute dtype.
- diffusers 0.42 has no ``ggml_quantization_ops`` slot (the mat-vec kernel object newer diffusers code looks for);
  the replaced ``GGUFLinear.forward`` covers what it would serve (inputs of up to 8 rows).

The patched internals change between releases: :func:`install_kernel` checks the diffusers version
(:data:`DIFFUSERS_VERSIONS`) and that every internal it replaces exists, and raises
:class:`DiffusersIntegrationError` otherwise (never a silent fall back to diffusers' own path).
:func:`uninstall_kernel` restores diffusers' own code.
"""

from __future__ import annotations

import importlib
import threading

import torch
import torch.nn.functional as F

from . import check_library

__all__ = ["install_kernel", "uninstall_kernel", "check_diffusers", "DiffusersIntegrationError",
           "DIFFUSERS_VERSIONS", "MAT_VEC_ROWS", "DENSE_FROM_ROWS"]

# [first, last) diffusers releases whose GGUF internals this module was written against (0.42.0 and 0.42.1 have
# identical GGUF code; 0.42.1 is the tested pin).
DIFFUSERS_VERSIONS = ("0.42.0", "0.43.0")
# Rows of input served by the fused product on the packed weight whatever the device (the mat-vec regime).
MAT_VEC_ROWS = 8
# From how many rows dequantizing to the compute dtype + F.linear beats the fused product, per (device type, compute
# dtype); measured on a 2-core AVX-512 CPU on a 3072 x 3072 layer (benchmarks/DIFFUSERS.md, "Crossover"): the
# bfloat16 GEMM (avx512_bf16) overtakes from 16 rows, the float16 one from 16 to 32, the float32 one at about 256.
# Elsewhere (MPS, whose GEMM is the GPU's) the dense path serves everything above MAT_VEC_ROWS.
DENSE_FROM_ROWS = {("cpu", torch.bfloat16): 16, ("cpu", torch.float16): 32, ("cpu", torch.float32): 256}

_UTILS = "diffusers.quantizers.gguf.utils"
_UTILS_NAMES = ("GGUFLinear", "GGUFParameter", "SUPPORTED_GGUF_QUANT_TYPES", "dequantize_gguf_tensor",
                "_dequantize_gguf_and_restore_linear", "_create_accelerate_new_hook", "ops")
_QUANTIZER = "diffusers.quantizers.gguf.gguf_quantizer"
_QUANTIZER_NAMES = ("GGUFQuantizer", "dequantize_gguf_tensor", "_dequantize_gguf_and_restore_linear")
_LOADER = "diffusers.models.model_loading_utils"
_LOADER_NAMES = ("load_gguf_checkpoint",)

_installed: dict = {}  # what install_kernel changed: {(module, name): original}, "types": added type ids


class DiffusersIntegrationError(RuntimeError):
    """diffusers is a version, or has internals, this module does not know."""


def check_diffusers(module: str | None = None, names: tuple = ()):
    """Raise unless the installed diffusers is in :data:`DIFFUSERS_VERSIONS`; then import ``module``, check it
    defines ``names`` (the internals this module replaces or calls) and return it."""
    return check_library("diffusers", DIFFUSERS_VERSIONS, DiffusersIntegrationError, module, names)


def _packed(weight):
    """(uint8 blocks, GGML type id) of a GGUFParameter, or None for a weight that is not packed."""
    quant_type = getattr(weight, "quant_type", None)
    if quant_type is None:
        return None
    blocks = weight.as_tensor() if hasattr(weight, "as_tensor") else weight
    return blocks.detach().view(torch.uint8), int(quant_type)


def dequantize_gguf_tensor(tensor, dtype: torch.dtype = torch.float32):
    """diffusers' ``dequantize_gguf_tensor`` on this package: the tensor's values in ``dtype`` (float32 by default:
    the exact values, which callers cast once), logical shape; a tensor that is not packed is returned as is."""
    packed = _packed(tensor)
    if packed is None:
        return tensor
    from .. import dequantize

    blocks, type_id = packed
    return dequantize(blocks, type_id, dtype)


def _dense_from_rows(device_type: str, dtype: torch.dtype) -> int:
    return DENSE_FROM_ROWS.get((device_type, dtype), MAT_VEC_ROWS + 1)


def gguf_linear_forward(self, inputs: torch.Tensor) -> torch.Tensor:
    """``GGUFLinear.forward`` on this package: the result in the layer's compute dtype (diffusers' contract)."""
    packed = _packed(self.weight)
    utils = importlib.import_module(_UTILS)
    if packed is None or (utils.ops is not None and self.weight.is_cuda and inputs.is_cuda):
        return _installed[(_UTILS, "GGUFLinear.forward")](self, inputs)  # dense weight, or diffusers' CUDA kernels
    from .. import linear

    blocks, type_id = packed
    dtype = self.compute_dtype or inputs.dtype
    x = inputs.to(dtype)
    bias = self.bias
    rows = x.numel() // max(x.shape[-1], 1)
    if rows <= MAT_VEC_ROWS or rows < _dense_from_rows(x.device.type, dtype):
        if bias is not None and bias.dtype not in (torch.float32, dtype):
            bias = bias.to(torch.float32)
        return linear(x, blocks, type_id, bias)
    return F.linear(x, _dense_weight(blocks, type_id, x, dtype), None if bias is None else bias.to(dtype))


_scratch = threading.local()  # per thread: a flat buffer that the dense path decodes weights into on the CPU


def _dense_weight(blocks: torch.Tensor, type_id: int, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weight decoded to ``dtype``. On the CPU into a buffer reused across layers and forwards: torch's CPU
    allocator hands a large tensor fresh pages every time, and faulting them in costs as much as decoding or more
    (a 12288 x 3072 weight: 2-4x the time of decoding into a reused buffer, benchmarks/DIFFUSERS.md). Not when autograd may keep the weight for a backward."""
    from .. import dequantize

    shape = (blocks.shape[0], x.shape[-1])
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return dequantize(blocks, type_id, dtype)
    n = shape[0] * shape[1]
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.numel() < n:
        _scratch.buffer = None  # free the old one first
        buffer = _scratch.buffer = torch.empty(n, dtype=dtype)
    return dequantize(blocks, type_id, dtype, out=buffer[:n].view(shape))


def _dequantize_gguf_and_restore_linear(model, modules_to_not_convert=()):
    """diffusers' whole-model dequantization (``model.dequantize()``) on this package: every GGUFLinear becomes an
    ``nn.Linear`` whose weight is decoded straight to the layer's compute dtype (one rounding per weight)."""
    utils = importlib.import_module(_UTILS)
    for name, module in model.named_children():
        if isinstance(module, utils.GGUFLinear) and name not in modules_to_not_convert:
            dtype = module.compute_dtype or torch.float32
            device = module.weight.device
            new_module = torch.nn.Linear(module.in_features, module.out_features, module.bias is not None,
                                         device="meta")
            new_module.weight = torch.nn.Parameter(dequantize_gguf_tensor(module.weight, dtype),
                                                   requires_grad=False)
            if module.bias is not None:
                new_module.bias = module.bias
            if hasattr(module, "_hf_hook"):  # accelerate's offload hook moves with the layer, as in diffusers
                from accelerate.hooks import add_hook_to_module, remove_hook_from_module

                new_hook = utils._create_accelerate_new_hook(module._hf_hook)
                remove_hook_from_module(module)
                add_hook_to_module(new_module, new_hook)
            model._modules[name] = new_module.to(device)
        elif list(module.children()):
            _dequantize_gguf_and_restore_linear(module, modules_to_not_convert)
    return model


def _loadable_types() -> list:
    """GGML types this package decodes and gguf-py's reader knows, as ``gguf.GGMLQuantizationType`` members."""
    import gguf

    from ..types import SUPPORTED

    known = {int(t) for t in gguf.GGMLQuantizationType}
    return [gguf.GGMLQuantizationType(t.id) for t in SUPPORTED.values()
            if t.id in known and t.id in gguf.GGML_QUANT_SIZES and t.name not in ("F32", "F16")]


def _set(module, name: str, value) -> None:
    key = (module.__name__, name)
    if key not in _installed:
        _installed[key] = getattr(module, name)
    setattr(module, name, value)


def install_kernel() -> None:
    """Make diffusers' GGUF layers, loader and whole-model dequantization run on this package (module docstring).
    Call before ``from_single_file`` (layers already loaded pick the new forward up too).

    Raises :class:`DiffusersIntegrationError` if diffusers is not a known version or an internal it replaces is
    missing.
    """
    utils = check_diffusers(_UTILS, _UTILS_NAMES)
    quantizer = check_diffusers(_QUANTIZER, _QUANTIZER_NAMES)
    check_diffusers(_LOADER, _LOADER_NAMES)
    key = (_UTILS, "GGUFLinear.forward")
    if key not in _installed:
        _installed[key] = utils.GGUFLinear.forward
    utils.GGUFLinear.forward = gguf_linear_forward
    for module in (utils, quantizer):  # gguf_quantizer imported both names from utils
        _set(module, "dequantize_gguf_tensor", dequantize_gguf_tensor)
        _set(module, "_dequantize_gguf_and_restore_linear", _dequantize_gguf_and_restore_linear)
    # The loader reads this list at each call: extended in place, it accepts every type this package decodes.
    supported = utils.SUPPORTED_GGUF_QUANT_TYPES
    added = _installed.setdefault("types", [])
    for t in _loadable_types():
        if t not in supported:
            supported.append(t)
            added.append(t)


def uninstall_kernel() -> None:
    """Undo :func:`install_kernel`: diffusers' own GGUF code again."""
    _scratch.__dict__.pop("buffer", None)
    if not _installed:
        return
    utils = importlib.import_module(_UTILS)
    for t in _installed.pop("types", []):
        if t in utils.SUPPORTED_GGUF_QUANT_TYPES:
            utils.SUPPORTED_GGUF_QUANT_TYPES.remove(t)
    forward = _installed.pop((_UTILS, "GGUFLinear.forward"), None)
    if forward is not None:
        utils.GGUFLinear.forward = forward
    for (module_name, name), original in list(_installed.items()):
        setattr(importlib.import_module(module_name), name, original)
    _installed.clear()
