"""transformers runs real GGUF files on this package's kernel (gguf_dequant.integrations.transformers).

The files are made by tests/transformers_models.py (transformers checkpoint -> llama.cpp's converter -> libllama's
quantizer; cached under .cache/transformers-models, about a minute to build the first time). The kernel is the
locally built Hub package loaded by `kernels` (tests/hub.py), wrapped only to count calls.

Bounds:
- float32 packed vs transformers' own float32 dense path: both compute every dot product in float32 on the same
  decoded weights, in different summation orders (the fused kernel's 16-lane order vs oneDNN's). One dot product of
  length K <= 512 differs by at most about (K/16 + 4) * 2^-24 * sum|w*x| (fused-cpu's bound), ~2e-6 relative; a
  few layers of normalised residual blocks amplify that by a small factor. The test asks for max|d logits| <=
  1e-4 * max|logits|: about 50x the largest difference observed (2e-6 relative) and 30x below the effect of
  bfloat16 weights and activations (rms 0.01 on logits of magnitude ~3), so a wrong table or a mis-ordered row
  cannot hide in it.
- bfloat16: the packed path multiplies exact weights in float32 and rounds each output once; transformers' own
  bfloat16 fallback computes the weights in bfloat16 (rounding more than once) and multiplies in bfloat16.
  Asserted: the packed logits' rms distance to the float32 dense logits is smaller than the fallback's.
- For Q5_0, which transformers cannot read, "dense" is the model dequantized at load by this kernel
  (GgufConfig(dequantize=True); exact, as gguf-py).
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from gguf_dequant.integrations import transformers as integration  # noqa: E402

from .conftest import skip_unless_built  # noqa: E402
from .hub import hub_kernel  # noqa: E402
from .transformers_models import build, builders_missing  # noqa: E402

PACKED_FTYPES = ["Q8_0", "Q4_K_M", "Q3_K_M", "IQ4_XS", "Q5_0"]  # Q5_0: a type transformers does not list
UNLISTED = {"Q5_0"}
# <= 8 rows: linear; 12: linear or dequantize + matmul (the routing table); 100: dequantize + matmul (above every
# entry of the table), bit for bit transformers' dense float32 model
PROMPTS = {"short": 5, "long": 12, "prefill": 100}
F32_BOUND = 1e-4


@pytest.fixture(scope="module")
def gguf_files():
    skip_unless_built(builders_missing())
    return build


class CountingKernel(types.SimpleNamespace):
    """The Hub package module as transformers sees it, counting calls of the ops transformers makes."""

    OPS = ("linear", "mul_mat_vec", "mul_mat_id", "dequantize", "get_rows")

    def __init__(self, module):
        calls = collections.Counter()

        def counted(name):
            fn = getattr(module, name)

            def call(*args, **kwargs):
                calls[name] += 1
                return fn(*args, **kwargs)
            return call

        super().__init__(**{name: counted(name) for name in self.OPS}, GEMV_TYPES=module.GEMV_TYPES,
                         MAX_GEMV_ROWS=module.MAX_GEMV_ROWS, supported_devices=module.supported_devices,
                         __name__=module.__name__, calls=calls)


@pytest.fixture(scope="module")
def kernel():
    module = hub_kernel()
    k = CountingKernel(module)
    yield k
    integration.uninstall_kernel()


def _load(path: Path, dtype, kernel=None, **kwargs):
    from transformers import AutoModelForCausalLM

    integration.uninstall_kernel()
    if kernel is not None:
        integration.install_kernel(kernel)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype, **kwargs).eval()


def _dense_reference(path: Path, dtype, kernel, ftype):
    """transformers' own dense path (no kernel: it dequantizes at load with its torch code). For a type it does not
    list it has none, so the weights are dequantized at load by this kernel (exact, as gguf-py) instead."""
    if ftype in UNLISTED:
        from transformers import GgufConfig

        return _load(path, dtype, kernel, quantization_config=GgufConfig(dequantize=True))
    return _load(path, dtype)


def _prompt(n: int) -> torch.Tensor:
    return (torch.arange(3, 3 + n)[None] * 37) % 1000


def _logits(model, ids, kernel=None) -> torch.Tensor:
    """A forward; a packed model needs its kernel installed (transformers keeps one kernel per process, and the
    dense references are loaded with none)."""
    if kernel is not None:
        integration.install_kernel(kernel)
        kernel.calls.clear()
    with torch.no_grad():
        return model(ids).logits.float()


def _rms(d: torch.Tensor) -> float:
    return d.pow(2).mean().sqrt().item()


def _module_counts(model) -> collections.Counter:
    return collections.Counter(type(m).__name__ for m in model.modules())


def _routed(model, rows: int, dtype) -> int:
    """How many of the model's GgufLinear layers compute ``rows`` rows with the kernel's linear (CPU)."""
    return sum(rows <= integration.linear_max_rows(m.ggml_type, dtype)
               for m in model.modules() if type(m).__name__ == "GgufLinear")


@pytest.fixture(scope="module")
def lfm2_models(gguf_files, kernel):
    """Per quantization: the float32 dense reference, transformers' bfloat16 fallback and the packed models."""
    cache = {}

    def get(ftype, which):
        key = (ftype, which)
        if key not in cache:
            path = gguf_files("lfm2-tiny", ftype)
            if which == "dense-f32":
                cache[key] = _dense_reference(path, torch.float32, kernel, ftype)
            elif which == "dense-bf16":
                cache[key] = _dense_reference(path, torch.bfloat16, kernel, ftype)
            else:
                cache[key] = _load(path, {"packed-f32": torch.float32, "packed-bf16": torch.bfloat16}[which], kernel)
        return cache[key]

    return get


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("ftype", PACKED_FTYPES)
def test_packed_lfm2(lfm2_models, kernel, ftype, dtype):
    dense = lfm2_models(ftype, "dense-f32")
    model = lfm2_models(ftype, "packed-f32" if dtype == torch.float32 else "packed-bf16")
    counts = _module_counts(model)
    n_linear = _module_counts(dense)["Linear"]
    assert n_linear > 0 and counts["GgufLinear"] == n_linear and counts["Linear"] == 0, counts
    assert counts["GgufEmbedding"] == 1 and counts["Embedding"] == 0, counts
    assert all(m.weight.dtype == torch.uint8 for m in model.modules() if type(m).__name__.startswith("Gguf"))

    for prompt, n in PROMPTS.items():
        ids = _prompt(n)
        got = _logits(model, ids, kernel)
        # every packed layer went through the kernel: linear up to its routing limit, the kernel's dequantize above
        routed = _routed(model, n, dtype)
        assert kernel.calls["get_rows"] == 1, dict(kernel.calls)
        assert (kernel.calls["linear"], kernel.calls["dequantize"]) == (routed, n_linear - routed), \
            (prompt, dict(kernel.calls))
        assert kernel.calls["mul_mat_vec"] == 0, dict(kernel.calls)
        ref = _logits(dense, ids)
        assert got.shape == ref.shape
        if dtype == torch.float32 and routed == 0:
            # this kernel's exact dequantization feeds the same torch matmul as transformers' dense model
            assert torch.equal(got, ref), f"{ftype} {prompt}: max |d| {(got - ref).abs().max().item()}"
        elif dtype == torch.float32:
            err = (got - ref).abs().max().item()
            assert err <= F32_BOUND * ref.abs().max().item(), f"{ftype} {prompt}: max |d| {err}"
        else:
            theirs = _logits(lfm2_models(ftype, "dense-bf16"), ids)
            ours_rms, theirs_rms = _rms(got - ref), _rms(theirs - ref)
            if ftype in UNLISTED and routed == 0:
                # transformers has no fallback of its own here: "dense" is this kernel's bf16 weights (rounded once)
                # in a bf16 matmul, which is exactly what the packed path does above MAX_GEMV_ROWS
                assert ours_rms == theirs_rms, f"{ftype} {prompt}: {ours_rms} vs {theirs_rms}"
            else:
                assert ours_rms < theirs_rms, f"{ftype} {prompt}: packed bf16 rms {ours_rms} vs dense bf16 {theirs_rms}"


def test_local_kernels_route(gguf_files, kernel, monkeypatch):
    """The documented route without this module: kernels' LOCAL_KERNELS maps the id transformers asks for to this
    checkout. transformers 5.24 calls kernels only when kernels >= 0.18.2 (the registry here has 0.17.2, whose
    get_kernel reads LOCAL_KERNELS the same way), so that version gate is lifted inside this test only."""
    import kernels
    from transformers.integrations import hub_kernels
    from transformers.integrations.gguf import kernels as gk

    path = gguf_files("lfm2-tiny", "Q4_K_M")
    dense = _load(path, torch.float32)
    integration.uninstall_kernel()
    monkeypatch.setenv("LOCAL_KERNELS", f"ggml-org/ggml-quantization={Path(__file__).resolve().parents[1]}")
    monkeypatch.setattr(hub_kernels, "is_kernels_available", lambda *args, **kwargs: True)
    monkeypatch.setattr(hub_kernels, "get_kernel_hub", kernels.get_kernel, raising=False)
    try:
        resolved = gk.get_gguf_kernel()
        assert resolved is not False and set(resolved.gemv_types) == set(kernel.GEMV_TYPES)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        assert _module_counts(model)["GgufLinear"] == _module_counts(dense)["Linear"]
        ids = _prompt(5)
        got, ref = _logits(model, ids), _logits(dense, ids)
        assert (got - ref).abs().max().item() <= F32_BOUND * ref.abs().max().item()
    finally:
        integration.uninstall_kernel()


def test_unlisted_type_needs_the_kernel(gguf_files):
    """transformers' own GGUF reader refuses a Q5_0 file; with this kernel installed it loads packed (above)."""
    path = gguf_files("lfm2-tiny", "Q5_0")
    with pytest.raises(ValueError, match="ggml type 6, which is not supported"):
        _load(path, torch.float32)


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q5_0"])
def test_packed_generate(lfm2_models, kernel, ftype):
    model = lfm2_models(ftype, "packed-bf16")
    n_linear = _module_counts(model)["GgufLinear"]
    ids = _prompt(6)
    integration.install_kernel(kernel)
    kernel.calls.clear()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert out.shape == (1, 6 + 16) and torch.equal(out[:, :6], ids)
    # one forward per new token, each through every packed layer with linear (the prompt's too: 6 rows)
    assert kernel.calls["linear"] >= 16 * n_linear, dict(kernel.calls)


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q8_0"])
def test_packed_moe_uses_mul_mat_id(gguf_files, kernel, ftype):
    path = gguf_files("qwen35moe-tiny", ftype)
    dense = _load(path, torch.float32)
    model = _load(path, torch.float32, kernel)
    counts = _module_counts(model)
    n_layers = model.config.num_hidden_layers
    assert counts["GgufExperts"] == n_layers and counts["GgufEmbedding"] == 1, counts
    assert all(e.gate_up_proj.dtype == torch.uint8 and e.down_proj.dtype == torch.uint8
               for e in model.modules() if type(e).__name__ == "GgufExperts")
    for prompt, n in PROMPTS.items():
        ids = _prompt(n)
        got = _logits(model, ids, kernel)
        assert kernel.calls["mul_mat_id"] == 2 * n_layers, (prompt, dict(kernel.calls))  # gate_up, then down
        ref = _logits(dense, ids)
        err = (got - ref).abs().max().item()
        assert err <= F32_BOUND * ref.abs().max().item(), f"{ftype} {prompt}: max |d| {err}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_linear_routing(kernel, monkeypatch, dtype):
    """Which path GgufLinear.forward takes, and that each computes x @ W.T + bias: the kernel's linear up to
    linear_max_rows (MAX_GEMV_ROWS, or the routing table's entry), above it one dequantize + F.linear (into the
    workspace, in row chunks when the weight does not fit; a fresh weight when autograd records x), and for a
    weight larger than transformers' unpacking chunk transformers' own chunked forward."""
    from transformers.integrations.gguf import kernels as gk
    from transformers.integrations.gguf.utils import GgufLinear

    from gguf_dequant.testing import random_blocks

    n, k, q4_k = 64, 512, 12
    layer = GgufLinear(k, n, q4_k, bias=True)
    layer.weight.data.copy_(torch.from_numpy(random_blocks("Q4_K", n * k // 256, np.random.default_rng(0))
                                             .reshape(n, -1)))
    layer.bias.data.copy_(torch.randn(n))
    layer = layer.to(dtype)  # the weight stays uint8; the bias takes the model's dtype, as transformers loads it
    other = GgufLinear(k, n, q4_k)
    other.weight.data.copy_(torch.from_numpy(random_blocks("Q4_K", n * k // 256, np.random.default_rng(1))
                                             .reshape(n, -1)))
    integration.install_kernel(kernel)
    w = kernel.dequantize(layer.weight, q4_k, n, k, torch.float32).double()
    monkeypatch.setitem(integration.LINEAR_MAX_ROWS, dtype, {"Q4_K": 16})
    assert integration.linear_max_rows(q4_k, dtype) == 16
    assert integration.linear_max_rows(q4_k, torch.float16) == integration.linear_max_rows(14, dtype) == 8
    assert integration.linear_max_rows(q4_k, dtype, "mps") == 8
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    chunk_rows = 20  # a workspace of 20 weight rows: 64 rows in 4 equal chunks of 16
    cases = [(3, None, {"linear": 1}), (16, None, {"linear": 1}),
             (40, perm, {"dequantize": 4}, {"workspace": chunk_rows}),  # the first buffer: 20 rows
             (40, None, {"dequantize": 2}, {"workspace": 2 * chunk_rows}),  # 40 rows: a larger buffer
             (40, None, {"dequantize": 4}, {"workspace": 21.5}),  # not whole rows: 4 chunks of 16, none past 21
             (17, None, {"dequantize": 1}), (5, perm, {"linear": 1}), (40, perm, {"dequantize": 1}),
             (40, None, {"dequantize": 2}, {"chunk": n * k - 1}),  # transformers' forward: two chunks of rows
             (17, None, {"dequantize": 2}, {"grad": True})]  # autograd records x: a fresh weight (and `other`)
    kept = []  # calls of the malloc thresholds' setter (see test_prefill_keeps_freed_pages)
    monkeypatch.setattr(integration, "_keep_freed_pages", lambda: kept.append(1))
    for rows, permutation, expected, *options in cases:
        options = options[0] if options else {}
        kept.clear()
        monkeypatch.setattr(gk, "DEQUANT_CHUNK_ELEMS", options.get("chunk", 64 << 20))
        monkeypatch.setattr(integration, "WORKSPACE_BYTES", int(options.get("workspace", n) * k * dtype.itemsize))
        layer.input_permutation = permutation
        x = torch.randn(rows, k).reshape(2, rows // 2, k) if rows % 2 == 0 else torch.randn(1, rows, k)
        x = x.to(dtype).requires_grad_(options.get("grad", False))
        kernel.calls.clear()
        with torch.set_grad_enabled(x.requires_grad):
            y = layer(x)
        if x.requires_grad:
            # another layer's weight goes through the workspace before the backward pass, which must still see this
            # layer's weight: dx = ones @ W (bound of a sum of n products of exact values in x's dtype)
            with torch.no_grad():
                other(x.detach())
            y.sum().backward()
            grad_bound = n * 2.0**-24 if dtype == torch.float32 else 2.0**-7
            assert ((x.grad.double() - w.sum(0)).abs() <= grad_bound * w.abs().sum(0)).all()
            x, y = x.detach(), y.detach()
        assert dict(kernel.calls) == expected, (rows, dict(kernel.calls))
        assert bool(kept) == ("dequantize" in expected and "chunk" not in options), rows  # our dequantize path
        assert y.shape == (*x.shape[:-1], n) and y.dtype == dtype
        xs = (x if permutation is None else x[..., permutation]).double()
        b = layer.bias.double()
        exact, scale = xs @ w.T + b, xs.abs() @ w.abs().T + b.abs()
        # float32: any summation order is within (K + 2) unit roundoffs of sum |w x| + |b|; bfloat16 rounds x's
        # products' result (and, dequantized, the weights) to 8 bits
        bound = (k + 2) * 2.0**-24 if dtype == torch.float32 else 2.0**-7
        assert ((y.double() - exact).abs() <= bound * scale).all(), (rows, (y.double() - exact).abs().max())


_HEAP_OR_MAPPING = r"""
import ctypes, json, torch
from gguf_dequant.integrations import transformers as integration

libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]

def from_heap(nbytes):  # a block from the main heap (its end moves) rather than a mapping of its own
    end = libc.sbrk(0)
    block = torch.empty(nbytes, dtype=torch.uint8)
    grew = libc.sbrk(0) - end > nbytes // 2
    del block
    return grew

first = from_heap(16 << 20)  # a mapping; freeing it raises glibc's own threshold to its size, no further
kept = integration._keep_freed_pages()
print(json.dumps([first, kept, from_heap(30 << 20)]))
"""


@pytest.mark.skipif(sys.platform != "linux" or __import__("platform").libc_ver()[0] != "glibc", reason="glibc malloc")
def test_prefill_keeps_freed_pages():
    """In a fresh process (as after loading a packed model: nothing large freed yet) a large block gets a mapping of
    its own, returned to the system when freed (fresh pages, one fault each, at every use); after the thresholds a
    prefill sets, a block under 32 MiB, larger than any freed before (which glibc's own threshold follows), comes
    from the heap, whose freed memory is kept. (Page-fault counts of reusing one size are not a test: whether glibc
    reuses a freed aligned block of the same size depends on what was allocated beside it.)"""
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root)
    out = subprocess.run([sys.executable, "-c", _HEAP_OR_MAPPING], capture_output=True, text=True, env=env, cwd=root,
                         check=True)
    before, kept, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert kept and not before and after, (before, kept, after)


def test_routing_table_is_the_measurement():
    """LINEAR_MAX_ROWS holds the "linear wins up to M" column of benchmarks/LINEAR_ROUTING.md (types at 8 absent)."""
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "LINEAR_ROUTING.md").read_text()
    measured = {torch.bfloat16: {}, torch.float32: {}}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 3 and cells[1] in ("bf16", "f32") and int(cells[-1]) > integration.MAX_GEMV_ROWS:
            measured[torch.bfloat16 if cells[1] == "bf16" else torch.float32][cells[0]] = int(cells[-1])
    assert measured[torch.bfloat16] and measured == integration.LINEAR_MAX_ROWS


@pytest.mark.mps
def test_packed_on_mps(gguf_files):
    """The same route on a Mac: the packed model on MPS against transformers' float32 dense path on the CPU."""
    if not torch.backends.mps.is_available():
        pytest.skip("needs a Mac with MPS")
    path = gguf_files("lfm2-tiny", "Q4_K_M")
    dense = _load(path, torch.float32)
    kernel = CountingKernel(integration.load_kernel("mps"))
    model = _load(path, torch.float32, kernel, device_map="mps")
    assert _module_counts(model)["GgufLinear"] == _module_counts(dense)["Linear"]
    for n in PROMPTS.values():
        ids = _prompt(n)
        got = _logits(model, ids.to("mps"), kernel).cpu()
        assert kernel.calls["linear" if n <= 8 else "dequantize"] > 0, dict(kernel.calls)
        ref = _logits(dense, ids)
        assert (got - ref).abs().max().item() <= F32_BOUND * ref.abs().max().item()
    integration.uninstall_kernel()


# ------------------------------------------------------------------------------------------- legacy loader

@pytest.fixture(scope="module", params=["llama-tiny", "qwen2moe-tiny"])
def legacy_default_f32(request, gguf_files):
    """transformers' legacy loader as is (gguf-py's float32 dequantization) on a llama (its tensor processor only
    permutes: values move as 16-bit bits) and a qwen2moe (experts split and restacked: values go through float32).
    The qwen2moe file mixes Q4_K, Q6_K, Q5_0 and Q8_0."""
    path = gguf_files(request.param, "Q4_K_M")
    return path, _load(path, torch.float32).state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
def test_fast_gguf_load_state_dict(legacy_default_f32, monkeypatch, dtype):
    import gguf_dequant

    path, reference = legacy_default_f32
    calls = collections.Counter()
    real = gguf_dequant.dequantize

    def counting(*args, **kwargs):
        calls[args[1]] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_dequant, "dequantize", counting)
    with integration.fast_gguf_load(backend="kernel"):  # the compiled backend, or an error
        got = _load(path, dtype).state_dict()
    import gguf

    n_tensors = len(gguf.GGUFReader(str(path)).tensors)
    assert sum(calls.values()) == n_tensors, calls
    assert set(got) == set(reference)
    for name, ref in reference.items():
        assert got[name].dtype == dtype, name
        # float32: gguf-py's values bit for bit; 16-bit: those values rounded once
        expected = ref.to(dtype)
        assert torch.equal(got[name].view(torch.uint8), expected.contiguous().view(torch.uint8)), name


_RSS_SCRIPT = r"""
import json, resource, sys, torch
from pathlib import Path
import transformers
from transformers import AutoModelForCausalLM
from gguf_dequant.integrations.transformers import fast_gguf_load
transformers.logging.set_verbosity_error()
small, big = Path(sys.argv[1]), Path(sys.argv[2])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with fast_gguf_load(backend="kernel"):  # warm up every import and the kernel on the tiny file
    AutoModelForCausalLM.from_pretrained(small.parent, gguf_file=small.name, dtype=torch.bfloat16)
before = peak()
with fast_gguf_load(backend="kernel"):
    model = AutoModelForCausalLM.from_pretrained(big.parent, gguf_file=big.name, dtype=torch.bfloat16)
after = peak()
sizes = [t.numel() * t.element_size() for t in model.state_dict().values()]
print(json.dumps({"growth": after - before, "model": sum(sizes), "largest": max(sizes)}))
"""


def test_fast_gguf_load_peak_rss(gguf_files):
    """Peak RSS growth of a load (in a fresh process) stays near the loaded model's size: no float32 copy of the
    model, and no file pages kept."""
    small, big = gguf_files("llama-tiny", "Q4_K_M"), gguf_files("llama-small", "Q4_K_M")
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(small), str(big)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    # allowance: about one tensor's transients (its decoded values, a permuted copy, its file pages) and 8 MiB of
    # allocator slack. Measured: 66 MB for a 59 MB model; transformers' own loader grows by 96 MB here.
    assert r["growth"] <= r["model"] + 3 * r["largest"] + (8 << 20), r


# ------------------------------------------------------------------------------------------- loud failures

def test_unknown_transformers_version_is_refused(monkeypatch, kernel):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    with pytest.raises(integration.TransformersIntegrationError, match="5.99.0"):
        integration.install_kernel(kernel)
    with pytest.raises(integration.TransformersIntegrationError, match="5.99.0"):
        with integration.fast_gguf_load():
            pass


def test_changed_internals_are_refused(monkeypatch, kernel):
    from transformers.integrations.gguf import kernels as gk
    from transformers import modeling_gguf_pytorch_utils as legacy

    monkeypatch.delattr(gk, "GgufKernel")
    with pytest.raises(integration.TransformersIntegrationError, match="GgufKernel"):
        integration.install_kernel(kernel)
    monkeypatch.delattr(legacy, "TENSOR_PROCESSORS")
    with pytest.raises(integration.TransformersIntegrationError, match="TENSOR_PROCESSORS"):
        with integration.fast_gguf_load():
            pass


def test_kernel_without_fused_ops_is_refused(kernel):
    """A kernel build without the fused ops (transformers would silently load dense float32)."""
    partial = types.SimpleNamespace(dequantize=kernel.dequantize, get_rows=kernel.get_rows, __name__="old-build")
    with pytest.raises(integration.TransformersIntegrationError, match="mul_mat_vec, mul_mat_id, GEMV_TYPES"):
        integration.install_kernel(partial)


def test_uninstall_restores_transformers(kernel):
    from transformers.integrations.gguf import dequant, kernels as gk

    from transformers.integrations.gguf.utils import GgufLinear

    integration.uninstall_kernel()
    original, blocks, forward = gk.kernel_can_read, dict(dequant.GGML_BLOCK), GgufLinear.forward
    integration.install_kernel(kernel)
    integration.install_kernel(kernel)  # twice: uninstall still restores transformers' own functions
    assert gk._gguf_kernel is not None and gk.kernel_can_read is not original and GgufLinear.forward is not forward
    assert 6 in dequant.GGML_BLOCK and 6 not in blocks  # Q5_0
    assert gk.kernel_can_read(torch.empty(1, dtype=torch.uint8))
    integration.uninstall_kernel()
    assert gk._gguf_kernel is None and gk.kernel_can_read is original and dequant.GGML_BLOCK == blocks
    assert GgufLinear.forward is forward


def test_kernel_without_linear_keeps_transformers_forward(kernel):
    """Another GGUF kernel (the ops transformers calls, no linear): GgufLinear keeps transformers' forward."""
    from transformers.integrations.gguf.utils import GgufLinear

    integration.uninstall_kernel()
    forward = GgufLinear.forward
    integration.install_kernel(kernel)
    assert GgufLinear.forward is not forward
    other = types.SimpleNamespace(**{op: getattr(kernel, op) for op in integration.KERNEL_OPS}, __name__="other")
    integration.install_kernel(other)
    assert GgufLinear.forward is forward
    integration.uninstall_kernel()
    assert GgufLinear.forward is forward
