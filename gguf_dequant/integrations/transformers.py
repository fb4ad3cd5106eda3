"""Run transformers' GGUF models on gguf-dequant.

Two routes, one per GGUF loader transformers has:

- **Packed path** (transformers' new loader; architectures ``lfm2``, ``qwen35``, ``qwen35moe`` in 5.23/5.24):
  weights stay as GGUF blocks in ``GgufLinear`` / ``GgufEmbedding`` / ``GgufExperts`` modules, which call a GGUF
  kernel. :func:`install_kernel` makes that kernel this package's Hub kernel, so ``mul_mat_id``, ``dequantize`` and
  ``get_rows`` run here, on CPU and MPS alike, and gives ``GgufLinear`` a forward on the kernel's ``linear`` (up to
  :func:`linear_max_rows` rows; one ``dequantize`` + ``F.linear`` above)::

      from gguf_dequant.integrations.transformers import install_kernel
      install_kernel()            # or install_kernel(kernels.get_kernel("kernels-community/gguf-dequant", version=1))
      model = AutoModelForCausalLM.from_pretrained(path, gguf_file=name, dtype=torch.float32)

  transformers 5.23/5.24 look their kernel up only through ``kernels>=0.18.2,<0.19``, and treat an older
  ``kernels`` as absent; this route sets the kernel transformers caches, so it needs no particular ``kernels``
  version. With ``kernels>=0.18.2`` the kernel can also be mapped without this module:
  ``LOCAL_KERNELS="ggml-org/ggml-quantization=/path/to/gguf-dequant/build" python ...`` (kernels then loads the
  local build for the id transformers asks for); on CPU transformers then still unpacks with its own torch code
  for embeddings and prompts of more than 8 tokens, which :func:`install_kernel` routes to this kernel too.

- **Legacy loader** (every other architecture: llama, qwen2, gemma, ...): transformers dequantizes the whole file
  with gguf-py's numpy code at load. Inside :func:`fast_gguf_load` it dequantizes with this package instead
  (compiled backend, straight to the requested dtype, one rounding, one tensor at a time)::

      with fast_gguf_load():
          model = AutoModelForCausalLM.from_pretrained(path, gguf_file=name, dtype=torch.bfloat16)

Both routes rely on transformers internals that change between releases, so both check the transformers version
(:data:`TRANSFORMERS_VERSIONS`) and the internals they use, and raise :class:`TransformersIntegrationError`
instead of letting transformers fall back silently to a dense float32 model.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import mmap
import os
import platform
import threading
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from ..types import SUPPORTED
from . import check_library

__all__ = ["install_kernel", "uninstall_kernel", "load_kernel", "fast_gguf_load", "check_transformers",
           "TransformersIntegrationError", "TRANSFORMERS_VERSIONS", "KERNEL_OPS", "LINEAR_MAX_ROWS",
           "linear_max_rows"]

# [first, last) transformers releases whose GGUF internals this module was written against (5.23.0 and 5.24.0 have
# byte-identical GGUF code; 5.24.0 is the tested pin).
TRANSFORMERS_VERSIONS = ("5.23.0", "5.25.0")
# What transformers' GgufKernel wrapper reads from a kernel module.
KERNEL_OPS = ("mul_mat_vec", "dequantize", "get_rows", "mul_mat_id", "GEMV_TYPES")

_PACKED = "transformers.integrations.gguf.kernels"
_LAYERS = "transformers.integrations.gguf.utils"
_LAYERS_NAMES = ("GgufLinear",)
_PACKED_NAMES = ("_gguf_kernel", "GgufKernel", "get_gguf_kernel", "kernel_can_read", "MAX_GEMV_ROWS")
_BLOCKS = "transformers.integrations.gguf.dequant"
_BLOCKS_NAMES = ("GGML_BLOCK", "GGML_NAME")
_LEGACY = "transformers.modeling_gguf_pytorch_utils"
_LEGACY_NAMES = ("load_gguf_checkpoint", "TENSOR_PROCESSORS", "TensorProcessor", "LlamaTensorProcessor",
                 "get_gguf_hf_weights_map", "read_field")


class TransformersIntegrationError(RuntimeError):
    """transformers is a version, or has internals, this module does not know; or the kernel lacks an op."""


def check_transformers(module: str | None = None, names: tuple = ()) -> object | None:
    """Raise unless the installed transformers is in :data:`TRANSFORMERS_VERSIONS`; then import ``module`` and
    check it defines ``names`` (the internals a route uses) and return it."""
    return check_library("transformers", TRANSFORMERS_VERSIONS, TransformersIntegrationError, module, names)


# ------------------------------------------------------------------------------------------- packed path

_installed: dict = {}  # what install_kernel changed: {"kernel_can_read": original function, "types": added ids,
#                        "forward": GgufLinear's original forward}

MAX_GEMV_ROWS = 8  # transformers' GgufLinear takes its mat-vec up to this many rows, dequantize + matmul above

# On CPU, GgufLinear computes prompts of up to this many rows with the kernel's `linear` (on the packed blocks),
# and more rows as transformers does (dequantize to x's dtype, then a torch matmul), per x dtype and GGML type;
# types and dtypes not listed switch at MAX_GEMV_ROWS. Measured (benchmarks/LINEAR_ROUTING.md, one thread, an
# LFM2-350M feed-forward block): each entry is the largest M measured (16, 32, 64, 128, 512) up to which `linear`
# took at most 1/1.1 of the time at every measured M (at a load average of 10 the 32/64 entries move by a step
# between runs). Measured after the AMX tier took every quantized type (parts, factored and scaled orders, README):
# bfloat16 x above 8 rows runs there, and on these shapes (K = 1024 and 4608) wins only on the types listed; float32
# x runs on the float32 matrix kernel against a float32 GEMM. No type won at 512 rows.
LINEAR_MAX_ROWS: dict = {
    torch.bfloat16: {"Q8_0": 16, "Q2_K": 32, "Q3_K": 64, "Q5_K": 32, "MXFP4": 128, "IQ2_XXS": 16, "IQ3_S": 32},
    torch.float32: {"Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32, "Q8_0": 64, "Q2_K": 32, "Q3_K": 32, "Q4_K": 32,
                    "Q5_K": 32, "Q6_K": 32, "IQ4_XS": 64, "IQ4_NL": 64, "MXFP4": 64, "IQ2_XXS": 16, "IQ3_S": 32},
}


def linear_max_rows(ggml_type: int, dtype: torch.dtype, device_type: str = "cpu") -> int:
    """The most rows of x for which GgufLinear uses the kernel's ``linear`` (see :data:`LINEAR_MAX_ROWS`; the
    table is measured on CPU, so other devices switch at MAX_GEMV_ROWS)."""
    if device_type != "cpu" or ggml_type not in SUPPORTED:
        return MAX_GEMV_ROWS
    return max(MAX_GEMV_ROWS, LINEAR_MAX_ROWS.get(dtype, {}).get(SUPPORTED[ggml_type].name, 0))


def load_kernel(device="cpu"):
    """This package's Hub kernel for ``device``: the local build (``python -m gguf_dequant.local_build``), or
    ``kernels-community/gguf-dequant`` version 1 (``GGUF_DEQUANT_HUB=1`` on CPU), as ``gguf_dequant.dequantize``
    finds it."""
    from ..backends import _load_kernel

    module, why = _load_kernel(torch.device(device).type)
    if module is None:
        raise TransformersIntegrationError(f"no gguf-dequant kernel build for {device}: {why}")
    return module


def install_kernel(kernel=None, *, device="cpu"):
    """Make transformers' GGUF loader keep weights packed and compute with ``kernel`` (default
    :func:`load_kernel`). Call before ``from_pretrained``; returns transformers' ``GgufKernel`` wrapper.

    Raises :class:`TransformersIntegrationError` if transformers is not a known version, its internals changed,
    or the kernel lacks an op transformers calls (transformers itself would swallow that and load dense float32).
    """
    gk = check_transformers(_PACKED, _PACKED_NAMES)
    blocks = check_transformers(_BLOCKS, _BLOCKS_NAMES)
    layers = check_transformers(_LAYERS, _LAYERS_NAMES)
    module = kernel if kernel is not None else load_kernel(device)
    missing = [op for op in KERNEL_OPS if not hasattr(module, op)]
    if missing:
        raise TransformersIntegrationError(
            f"the kernel {getattr(module, '__name__', module)!r} lacks {', '.join(missing)}, which transformers' GGUF "
            "layers call (a gguf-dequant build without the fused ops?)")
    max_rows = getattr(module, "MAX_GEMV_ROWS", gk.MAX_GEMV_ROWS)
    if max_rows < gk.MAX_GEMV_ROWS:
        raise TransformersIntegrationError(f"transformers calls mul_mat_vec with up to {gk.MAX_GEMV_ROWS} rows; the "
                                           f"kernel takes {max_rows}")
    try:
        wrapper = gk.GgufKernel(module)
    except Exception as e:  # noqa: BLE001 - its constructor reads what it needs; anything else is a changed API
        raise TransformersIntegrationError(f"transformers' GgufKernel cannot wrap the kernel: {e!r}") from e
    devices = frozenset(module.supported_devices()) if hasattr(module, "supported_devices") else frozenset({"mps"})
    original = _installed.get("kernel_can_read", gk.kernel_can_read)

    # transformers unpacks CPU tensors with its own torch code even when a kernel is resolved (embeddings, and
    # GgufLinear with more than MAX_GEMV_ROWS rows); this kernel reads CPU memory, so it serves those too.
    def kernel_can_read(tensor) -> bool:
        return gk._gguf_kernel is wrapper and tensor.device.type in devices

    # transformers' reader refuses a file holding a quantized type its own table lacks (Q5_0, Q5_1, MXFP4, NVFP4,
    # TQ*, Q1_0, Q2_0); the kernel computes on all of them, so the table gets their block sizes.
    added = _installed.get("types", set())
    for tid in sorted(int(t) for t in module.GEMV_TYPES):
        t = SUPPORTED.get(tid)
        if t is not None and t.block_elems > 1 and tid not in blocks.GGML_BLOCK:
            blocks.GGML_BLOCK[tid] = (t.block_elems, t.block_bytes)
            blocks.GGML_NAME[tid] = t.name
            added.add(tid)
    forward = _installed.get("forward", layers.GgufLinear.forward)
    # a kernel without `linear` (another GGUF kernel) keeps transformers' forward on its mul_mat_vec
    layers.GgufLinear.forward = _linear_forward(module, gk, wrapper, forward) if hasattr(module, "linear") else forward
    gk._gguf_kernel = wrapper
    gk.kernel_can_read = kernel_can_read
    _installed.update(kernel_can_read=original, types=added, forward=forward)
    return wrapper


# Bytes of the per-thread buffer GgufLinear dequantizes into above its linear rows: reused across layers and calls,
# so a prefill does not fault in fresh pages for every weight (every layer of LFM2-350M and Qwen3.5-0.8B fits at
# once in bfloat16 and float32; their tied lm_head, 64M elements, goes through it in row chunks).
WORKSPACE_BYTES = 32 << 20
# A weight larger than the workspace goes through it in equal row chunks of at most this many bytes per torch
# thread: the GEMM then reads each chunk while it is still in cache. Measured on LFM2-350M's tied lm_head in
# bfloat16 (65536 x 1024, 512 rows of x; dense bf16 F.linear 94 ms at one thread, 47-51 ms at two): one thread
# 98 ms in 8 MiB chunks against 111 ms in 32 MiB ones; two threads 56 ms in 16 or 32 MiB chunks, 63-65 in 8 MiB.
CHUNK_BYTES_PER_THREAD = 8 << 20


# glibc malloc hands every block above its mmap threshold (128 KiB at start) back to the system when it is freed,
# so each later block of that size is fresh pages, zeroed one page fault at a time. It raises the threshold itself
# (up to 32 MiB, and its trim threshold to twice that) when the program frees such a block: loading a dense model
# does, loading a packed one does not. A packed prefill then faulted in about 360 MB of activations per 512-token
# forward (LFM2-350M, 2 threads: 92,000 page faults and 356 ms against 16,000 and 276 ms with these thresholds;
# dense bfloat16: 16,000, 254 ms).
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 64 << 20


@functools.cache
def _keep_freed_pages() -> bool:
    """Give glibc the thresholds a dense model's load leaves it with (process-wide, once; not undone by
    :func:`uninstall_kernel`), unless the environment sets them. True if set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or any(
            v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold,
                                                                                   MALLOC_TRIM_THRESHOLD))


def _linear_forward(module, gk, wrapper, transformers_forward):
    """GgufLinear.forward on the kernel's ``linear``: x in its own dtype straight to the result in that dtype (no
    float32 result and cast, as transformers' mat-vec path makes; bias added in float32 before the one rounding),
    for up to :func:`linear_max_rows` rows; more rows: the weight dequantized to x's dtype, then a torch GEMM
    (transformers' path without its result copy), or transformers' own forward for a weight larger than its
    unpacking chunk or when another kernel has been installed since.

    Without autograd the weight is dequantized into a buffer of :data:`WORKSPACE_BYTES` per thread (each layer's
    GEMM reads it before the next layer writes it; threads do not share it), a row chunk at a time when it does
    not fit; the GEMM of each chunk writes its columns of the result in place, the same sums as one GEMM. With
    autograd recording x, F.linear saves the weight for the backward pass, so each call gets a fresh one."""
    workspace = threading.local()

    def buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        held = getattr(workspace, "bytes", None)
        if held is None or held.device != device or held.numel() < WORKSPACE_BYTES:
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                held = workspace.bytes = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        return held[:rows * cols * dtype.itemsize].view(dtype).view(rows, cols)

    def dequantize_matmul(self, flat: torch.Tensor) -> torch.Tensor:
        n, k, dtype = self.out_features, self.in_features, flat.dtype
        if flat.device.type == "cpu":  # a prompt's activations: large blocks, freed and taken again every layer
            _keep_freed_pages()
        bias = None if self.bias is None else self.bias.to(dtype)
        if torch.is_grad_enabled() and flat.requires_grad:
            weight = module.dequantize(self.weight, self.ggml_type, n, k, dtype)
            return torch.nn.functional.linear(flat, weight, bias)
        if n * k * dtype.itemsize <= WORKSPACE_BYTES:
            weight = module.dequantize(self.weight, self.ggml_type, dtype=dtype, out=buffer(n, k, dtype, flat.device))
            return torch.nn.functional.linear(flat, weight, bias)
        # Equal chunks of at most the rows that fit in a chunk's bytes (so never more than the workspace holds).
        chunk_bytes = min(WORKSPACE_BYTES, CHUNK_BYTES_PER_THREAD * torch.get_num_threads())
        chunks = -(-n // max(1, chunk_bytes // (k * dtype.itemsize)))
        rows = -(-n // chunks)
        out = torch.empty(flat.shape[0], n, dtype=dtype, device=flat.device)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            weight = module.dequantize(self.weight[start:stop], self.ggml_type, dtype=dtype,
                                       out=buffer(stop - start, k, dtype, flat.device))
            if bias is None:
                torch.mm(flat, weight.t(), out=out[:, start:stop])
            else:  # as F.linear computes x @ W.T + b
                torch.addmm(bias[start:stop], flat, weight.t(), out=out[:, start:stop])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if gk._gguf_kernel is not wrapper:
            return transformers_forward(self, x)
        flat = x.reshape(-1, self.in_features)
        rows = flat.shape[0]
        if self.input_permutation is not None:
            flat = flat.index_select(1, self.input_permutation)
        if rows <= linear_max_rows(self.ggml_type, flat.dtype, flat.device.type):
            out = module.linear(flat, self.weight, self.ggml_type, self.bias)
        elif self.out_features * self.in_features <= getattr(gk, "DEQUANT_CHUNK_ELEMS", 0):
            out = dequantize_matmul(self, flat)
        else:
            return transformers_forward(self, x)
        return out.reshape(*x.shape[:-1], self.out_features)

    return forward


def uninstall_kernel() -> None:
    """Undo :func:`install_kernel`: transformers resolves its kernel again on the next load."""
    gk = importlib.import_module(_PACKED)
    blocks = importlib.import_module(_BLOCKS)
    if "kernel_can_read" in _installed:
        gk.kernel_can_read = _installed.pop("kernel_can_read")
    if "forward" in _installed:
        importlib.import_module(_LAYERS).GgufLinear.forward = _installed.pop("forward")
    for tid in _installed.pop("types", ()):
        blocks.GGML_BLOCK.pop(tid, None)
        blocks.GGML_NAME.pop(tid, None)
    gk._gguf_kernel = None


# ----------------------------------------------------------------------------------------- legacy loader

_HALF = (torch.float16, torch.bfloat16)


@contextmanager
def fast_gguf_load(*, backend: str | None = None):
    """Inside this context, transformers' legacy GGUF loader dequantizes with ``gguf_dequant.dequantize``
    (``backend`` forces one, as there) instead of gguf-py: straight to the requested dtype, tensor by tensor.

    The state dict equals transformers' own bit for bit (gguf-py decodes to float32 and transformers casts once;
    gguf-dequant rounds the same float32 values once). Peak memory is the loaded model plus about one tensor (each
    tensor's pages of the memory-mapped file are released once it is decoded). The file's metadata is parsed once
    instead of once per reader transformers opens, and gguf-py's tensor-name maps are built once per architecture
    instead of once per module. Architectures of the new loader (lfm2, qwen35, ...) do not go through here (see
    :func:`install_kernel`).
    """
    import gguf

    legacy = check_transformers(_LEGACY, _LEGACY_NAMES)
    original = legacy.load_gguf_checkpoint
    saved = {"GGUFReader": gguf.GGUFReader, "get_tensor_name_map": gguf.get_tensor_name_map}

    def load_gguf_checkpoint(gguf_checkpoint_path, return_tensors=False, model_to_load=None, torch_dtype=None):
        parsed = original(gguf_checkpoint_path, return_tensors=False, model_to_load=model_to_load,
                          torch_dtype=torch_dtype)
        if return_tensors:
            _load_tensors(legacy, gguf_checkpoint_path, parsed, model_to_load, torch_dtype, backend)
        return parsed

    legacy.load_gguf_checkpoint = load_gguf_checkpoint
    # transformers imports both from gguf inside its functions, at each call, so these are what it gets.
    gguf.GGUFReader = _shared_reader_class(saved["GGUFReader"])
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(saved["get_tensor_name_map"])
    try:
        yield
    finally:
        legacy.load_gguf_checkpoint = original
        gguf.GGUFReader, gguf.get_tensor_name_map = saved["GGUFReader"], saved["get_tensor_name_map"]


def _shared_reader_class(base):
    """A GGUFReader subclass that parses each file once for the life of one fast_gguf_load context (transformers
    opens a file once for its config and once more for its weights; the metadata of a large vocabulary takes
    seconds to parse)."""
    readers = {}

    class SharedGGUFReader(base):
        def __new__(cls, path, mode="r"):
            key = (os.path.realpath(os.fspath(path)), mode)
            if key not in readers:
                readers[key] = super().__new__(cls)
            return readers[key]

        def __init__(self, path, mode="r"):
            if not hasattr(self, "tensors"):
                super().__init__(path, mode)

    return SharedGGUFReader


def _release_pages(reader, tensor) -> None:
    """Drop a decoded tensor's pages of the read-only file map from this process's resident set (they are clean
    file pages: the kernel reads them again from the page cache if anything touches them)."""
    mm = getattr(reader.data, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = tensor.data_offset
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = (start + tensor.n_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)


def _raw_bytes(tensor) -> torch.Tensor:
    """A GGUFReader tensor's bytes as a uint8 tensor over the memory map, last dimension in bytes (no copy)."""
    raw = np.asarray(tensor.data)
    raw = raw.view(np.uint8) if raw.dtype != np.uint8 else raw
    with warnings.catch_warnings():  # the map is read-only and is only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(raw)


def _load_tensors(legacy, path, parsed: dict, model, dtype, backend) -> None:
    """transformers' legacy tensor loop (load_gguf_checkpoint, return_tensors=True) with gguf-dequant decoding."""
    import gguf
    from gguf.quants import dequantize as gguf_dequantize
    from tqdm.auto import tqdm

    from .. import dequantize

    reader = gguf.GGUFReader(path)
    architecture = legacy.read_field(reader, "general.architecture")[0]
    processor = legacy.TENSOR_PROCESSORS.get(architecture, legacy.TensorProcessor)(config=parsed.get("config", {}))
    key_mapping = legacy.get_gguf_hf_weights_map(model, processor)
    # These processors only rename, reshape and permute (never compute), so they can move 16-bit values as int16
    # bits; any other processor gets float32 values and its result is cast once, as transformers does.
    moves_bits = type(processor) in (legacy.TensorProcessor, legacy.LlamaTensorProcessor)
    parsed["tensors"] = {}
    for tensor in tqdm(reader.tensors, desc="Dequantizing GGUF tensors (gguf-dequant)"):
        qtype = int(tensor.tensor_type)
        decode_dtype = dtype if moves_bits and dtype in _HALF else torch.float32
        if qtype in SUPPORTED:
            values = dequantize(_raw_bytes(tensor), qtype, decode_dtype, backend=backend)
            weights = values.view(torch.int16).numpy() if decode_dtype in _HALF else values.numpy()
        else:  # integer tensors and the like: what transformers does
            decode_dtype = torch.float32
            weights = np.copy(gguf_dequantize(tensor.data, tensor.tensor_type))
        _release_pages(reader, tensor)  # decoded into memory of its own: the file's pages are not read again
        result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=key_mapping,
                                   parsed_parameters=parsed)
        if result.name not in key_mapping:
            continue
        out = torch.from_numpy(np.ascontiguousarray(result.weights))
        if decode_dtype in _HALF:
            out = out.view(decode_dtype)
        if dtype is not None and out.dtype != dtype:
            out = out.to(dtype)
        parsed["tensors"][key_mapping[result.name]] = out
