"""diffusers' GGUF models on gguf-dequant (gguf_dequant.integrations.diffusers).

Models: a tiny FluxTransformer2DModel and a tiny SD3Transformer2DModel written by diffusers, saved as GGUF under
diffusers' key names and quantized by llama.cpp's quantizer (tests/diffusers_models.py) to Q4_0, Q8_0, Q4_K, Q6_K,
IQ4_XS and MXFP4 (which diffusers 0.42 refuses), loaded with ``from_single_file(..., quantization_config=
GGUFQuantizationConfig(compute_dtype=...))`` in float32 and bfloat16.

Bounds. Per layer (every GGUFLinear of a loaded model, inputs of 4 rows and of 64 rows), against float64 sums of
the exactly decoded weights, per output with ``s = sum_k |w_k x_k| + |b|`` and ``u`` the compute dtype's unit
roundoff (2^-24 float32, 2^-8 bfloat16):
- the fused product (gguf_dequant.linear): ``|y - y64| <= (K + 2) 2^-24 (1 + u) s + u |y64|`` (float32 sums in
  the reference's worst-case order, one final rounding);
- dequantize to the compute dtype + F.linear: each weight rounded once to the compute dtype, then float32 sums:
  ``|y - y64| <= (2u + (K + 2) 2^-24) (1 + u) s + u |y64|``.
Per model (the whole forward), normwise relative to the float64 model: ours within 16 u (measured: up to 4.6 u
in float32, 2.4 u in bfloat16); diffusers' own path, which decodes in half-precision arithmetic, measured 3000 to
35000 u away in float32 and about as close as ours in bfloat16, so ours must be 100x closer than it in float32 and
no more than 1.5x further in bfloat16. MXFP4: diffusers refuses the file; ours loads and runs it.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from gguf_dequant.integrations import diffusers as integration  # noqa: E402
from gguf_dequant.oracles import ggml  # noqa: E402

from .diffusers_models import SPECS, TYPES, build, model_class  # noqa: E402

if not ggml.available():
    pytest.skip(f"the ggml oracle is needed to quantize the test models: {ggml.why_unavailable()}",
                allow_module_level=True)

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
UNIT = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}
DIFFUSERS_REFUSES = {"MXFP4"}


@pytest.fixture(autouse=True)
def _uninstalled():
    integration.uninstall_kernel()
    yield
    integration.uninstall_kernel()


def _load(spec: str, qtype: str, dtype: torch.dtype):
    from diffusers import GGUFQuantizationConfig

    path, config = build(spec, qtype)
    return model_class(SPECS[spec]).from_single_file(
        str(path), config=str(config), local_files_only=True, torch_dtype=dtype,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype)).eval()


def _inputs(spec: str, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(1)
    text = torch.randn(1, 16, 256, generator=g, dtype=torch.float64)
    pooled = torch.randn(1, 256, generator=g, dtype=torch.float64)
    if spec.startswith("flux"):
        image = torch.randn(1, 64, 16, generator=g, dtype=torch.float64)
        ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1)
        args = dict(hidden_states=image, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=torch.tensor([0.5], dtype=torch.float64), img_ids=ids.reshape(-1, 3),
                    txt_ids=torch.zeros(16, 3))
    else:
        image = torch.randn(1, 16, 16, 16, generator=g, dtype=torch.float64)
        args = dict(hidden_states=image, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=torch.tensor([500.0], dtype=torch.float64))
    return {k: v.to(dtype) if v.is_floating_point() and not k.endswith("_ids") else v for k, v in args.items()}


def _forward(model, spec: str, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(spec, dtype), return_dict=False)[0].double()


def _float64_model(spec: str, qtype: str):
    """The dense model in float64 with every weight exactly as the GGUF file decodes (gguf-py)."""
    import gguf
    from gguf.quants import dequantize

    path, config = build(spec, qtype)
    cls = model_class(SPECS[spec])
    model = cls.from_config(cls.load_config(str(config))).double().eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = {t.name: torch.from_numpy(np.array(dequantize(t.data, t.tensor_type))).double()
             .reshape(shapes[t.name]) for t in gguf.GGUFReader(str(path)).tensors}
    model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def float64_outputs():
    cache = {}

    def get(spec, qtype):
        if (spec, qtype) not in cache:
            cache[spec, qtype] = _forward(_float64_model(spec, qtype), spec, torch.float64)
        return cache[spec, qtype]

    return get


def _linears(model):
    utils = importlib.import_module("diffusers.quantizers.gguf.utils")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, utils.GGUFLinear)]


CASES = [(spec, q) for spec in ("flux-tiny", "sd3-tiny") for q in TYPES]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("spec, qtype", CASES, ids=[f"{s}-{q}" for s, q in CASES])
def test_from_single_file_runs_on_gguf_dequant(spec, qtype, dtype, float64_outputs):
    integration.install_kernel()
    model = _load(spec, qtype, dtype)
    layers = _linears(model)
    assert layers and all(m.weight.dtype == torch.uint8 and int(m.weight.quant_type) == integration._packed(m.weight)[1]
                          for _, m in layers), "weights must stay packed"
    assert {gguf_name(m.weight.quant_type) for _, m in layers} == {qtype}
    ours = _forward(model, spec, dtype)
    want = float64_outputs(spec, qtype)
    u = UNIT[dtype]
    err = (ours - want).norm().item() / want.norm().item()
    assert torch.isfinite(ours).all()
    assert err <= 16 * u, f"ours is {err / u:.1f} u from the float64 model"
    integration.uninstall_kernel()
    if qtype in DIFFUSERS_REFUSES:
        with pytest.raises((ValueError, OSError)) as refused:  # diffusers rewraps its ValueError as an OSError
            _load(spec, qtype, dtype)
        chain, e = [], refused.value
        while e is not None:
            chain.append(str(e))
            e = e.__context__
        assert any("which is unsupported" in text for text in chain), chain
        return
    theirs = (_forward(_load(spec, qtype, dtype), spec, dtype) - want).norm().item() / want.norm().item()
    if dtype == torch.float32:
        assert 100 * err <= theirs, f"ours {err / u:.1f} u, diffusers {theirs / u:.1f} u from the float64 model"
    else:
        assert err <= 1.5 * theirs, f"ours {err / u:.2f} u, diffusers {theirs / u:.2f} u from the float64 model"


def gguf_name(quant_type) -> str:
    import gguf

    return gguf.GGMLQuantizationType(int(quant_type)).name


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("qtype", ["Q4_K", "MXFP4"])
def test_every_layer_within_the_stated_bound(qtype, dtype):
    """Both regimes of the replaced forward, on every layer of the Flux model: 4 rows (fused product) and 64 rows
    (the dense path in bfloat16 on the CPU, the fused product in float32: integration.DENSE_FROM_ROWS)."""
    import gguf
    from gguf.quants import dequantize

    integration.install_kernel()
    model = _load("flux-tiny", qtype, dtype)
    g = torch.Generator().manual_seed(2)
    u = UNIT[dtype]
    for name, layer in _linears(model):
        blocks, type_id = integration._packed(layer.weight)
        w = torch.from_numpy(dequantize(blocks.numpy(), gguf.GGMLQuantizationType(type_id))).double()
        b = torch.zeros(w.shape[0], dtype=torch.float64) if layer.bias is None else layer.bias.double()
        k = w.shape[1]
        for rows in (4, 64):
            x = torch.randn(rows, k, generator=g).to(dtype)
            with torch.no_grad():
                y = layer(x)
            assert y.dtype == dtype and y.shape == (rows, w.shape[0])
            exact = x.double() @ w.T + b
            s = x.double().abs() @ w.abs().T + b.abs()
            dense = rows >= integration._dense_from_rows("cpu", dtype) and rows > integration.MAT_VEC_ROWS
            bound = ((2 * u if dense else 0) + (k + 2) * 2.0**-24) * (1 + u) * s + u * exact.abs()
            bad = (y.double() - exact).abs() > bound
            assert not bad.any(), f"{name} ({rows} rows): {int(bad.sum())} outputs outside the bound"


def test_whole_model_dequantize_uses_the_compute_dtype():
    """model.dequantize() (diffusers' _dequantize_gguf_and_restore_linear) decodes each weight straight to the
    compute dtype: the exact values rounded once, for a type diffusers cannot decode at all."""
    import gguf
    from gguf.quants import dequantize

    integration.install_kernel()
    model = _load("flux-tiny", "MXFP4", torch.bfloat16)
    packed = {n: integration._packed(m.weight) for n, m in _linears(model)}
    model.dequantize()
    assert not _linears(model)
    for name, (blocks, type_id) in packed.items():
        weight = model.get_submodule(name).weight
        exact = torch.from_numpy(dequantize(blocks.numpy(), gguf.GGMLQuantizationType(type_id)))
        assert weight.dtype == torch.bfloat16
        assert torch.equal(weight.view(torch.int16), exact.to(torch.bfloat16).view(torch.int16)), name


def test_uninstall_restores_diffusers():
    utils = importlib.import_module("diffusers.quantizers.gguf.utils")
    quantizer = importlib.import_module("diffusers.quantizers.gguf.gguf_quantizer")
    before = (utils.GGUFLinear.forward, utils.dequantize_gguf_tensor, quantizer._dequantize_gguf_and_restore_linear,
              list(utils.SUPPORTED_GGUF_QUANT_TYPES))
    integration.install_kernel()
    integration.install_kernel()  # twice: still one layer of patching
    assert utils.GGUFLinear.forward is integration.gguf_linear_forward
    import gguf

    from gguf_dequant.types import SUPPORTED

    readable = {t.id for t in SUPPORTED.values() if t.name not in ("F32", "F16")}
    readable &= {int(t) for t in gguf.GGML_QUANT_SIZES}
    assert {int(t) for t in utils.SUPPORTED_GGUF_QUANT_TYPES} == readable  # every type gguf-py reads and we decode
    integration.uninstall_kernel()
    after = (utils.GGUFLinear.forward, utils.dequantize_gguf_tensor, quantizer._dequantize_gguf_and_restore_linear,
             list(utils.SUPPORTED_GGUF_QUANT_TYPES))
    assert after == before


def test_unknown_diffusers_version_is_refused(monkeypatch):
    import diffusers

    monkeypatch.setattr(diffusers, "__version__", "0.43.0")
    with pytest.raises(integration.DiffusersIntegrationError, match="0.43.0 is not a version"):
        integration.install_kernel()


def test_missing_internal_is_refused(monkeypatch):
    utils = importlib.import_module("diffusers.quantizers.gguf.utils")
    monkeypatch.delattr(utils, "_dequantize_gguf_and_restore_linear")
    with pytest.raises(integration.DiffusersIntegrationError, match="lacks _dequantize_gguf_and_restore_linear"):
        integration.install_kernel()
    assert not integration._installed


def test_bad_inputs_raise_clear_errors():
    integration.install_kernel()
    model = _load("flux-tiny", "Q4_K", torch.float32)
    layer = model.transformer_blocks[0].attn.to_q
    with pytest.raises(ValueError, match=r"x has shape \(2, 128\) but the Q4_K rows of blocks hold 256 elements"):
        layer(torch.randn(2, 128))
    layer.compute_dtype = torch.int32
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        layer(torch.ones(2, layer.in_features))
