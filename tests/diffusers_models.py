"""GGUF files of diffusers models for the diffusers tests and benchmark, made offline and cached under .cache/.

A model is made by diffusers itself: ``from_config`` of a small config with a fixed seed, 2-D weights redrawn from
N(0, std) (so quantization error shows), saved with ``save_pretrained`` (its ``config.json`` is the directory
``from_single_file(..., config=...)`` reads). Its state dict is written with gguf-py's ``GGUFWriter`` under diffusers'
own key names (``from_single_file`` loads a checkpoint whose keys equal the model's without conversion): every 2-D
weight whose rows are whole blocks is quantized by llama.cpp's ``ggml_quantize_chunk`` (the oracle library,
``gguf_dequant.oracles.ggml``; all-ones importance matrix where a type needs one) to the requested type, everything
else stays float32, as llama.cpp's quantizer keeps such tensors. Benchmark-sized models (``weights="random"``) are
never materialized in float: each weight is drawn, quantized and written one tensor at a time from a meta model.

    python -m tests.diffusers_models SPEC TYPE [TYPE ...]     # e.g. flux-tiny Q4_K MXFP4
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GGUF_DIFFUSERS_MODELS", ROOT / ".cache" / "diffusers-models"))
BUILDER_VERSION = 1  # bump to rebuild every cached file after a change here
TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS", "MXFP4")


@dataclass(frozen=True)
class Spec:
    """One model: a diffusers model class, its config, and how its weights are drawn."""

    name: str
    model_class: str
    config: dict = field(default_factory=dict)
    std: float = 0.05
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps([BUILDER_VERSION, self.model_class, self.config, self.std, self.seed], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


SPECS = {
    # Flux: double-stream and single-stream blocks, hidden 256 (2 heads of 128), every Linear's K a multiple of 256.
    "flux-tiny": Spec("flux-tiny", "FluxTransformer2DModel", dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=2, joint_attention_dim=256, pooled_projection_dim=256, guidance_embeds=False,
        axes_dims_rope=[16, 56, 56])),
    # Stable Diffusion 3 (MMDiT with a patch-embedding convolution, which stays float32), hidden 256.
    "sd3-tiny": Spec("sd3-tiny", "SD3Transformer2DModel", dict(
        sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=4,
        joint_attention_dim=256, caption_projection_dim=256, pooled_projection_dim=256, out_channels=16,
        pos_embed_max_size=32)),
    # The benchmark: Flux at its real width (hidden 3072, 24 heads of 128), 2 double and 2 single blocks.
    "flux-bench": Spec("flux-bench", "FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=[16, 56, 56]), std=0.02),
}


def model_class(spec: Spec):
    import diffusers

    return getattr(diffusers, spec.model_class)


def _quantizable(qtype, shape) -> bool:
    from gguf_dequant.types import resolve

    return len(shape) == 2 and shape[1] % resolve(qtype).block_elems == 0


def _quantize(qtype, values: np.ndarray) -> np.ndarray:
    from gguf_dequant.oracles import ggml
    from gguf_dequant.types import resolve

    return ggml.quantize(resolve(qtype).id, values.astype(np.float32))


def _write(path: Path, tensors, qtype) -> None:
    """tensors: iterable of (name, float32 numpy array); 2-D weights of whole blocks quantized to ``qtype``."""
    import gguf

    from gguf_dequant.types import resolve

    tmp = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch="diffusers-test")
    for name, values in tensors:
        if name.endswith(".weight") and _quantizable(qtype, values.shape):
            raw = _quantize(qtype, values)
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType(resolve(qtype).id))
        else:
            writer.add_tensor(name, np.ascontiguousarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(path)


def _dense_model(spec: Spec):
    torch.manual_seed(spec.seed)
    model = model_class(spec).from_config(spec.config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, spec.std)
    return model


def _random_tensors(spec: Spec):
    """(name, values) for a meta-device model's state dict, drawn one tensor at a time (benchmark sizes)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = model_class(spec).from_config(spec.config)
    rng = np.random.default_rng(spec.seed)
    for name, p in model.state_dict().items():
        shape = tuple(p.shape)
        if len(shape) == 2:
            yield name, (rng.standard_normal(shape, dtype=np.float32) * spec.std)
        elif name.endswith(".weight") and len(shape) == 1:
            yield name, np.ones(shape, dtype=np.float32)  # norms
        else:
            yield name, (rng.standard_normal(shape, dtype=np.float32) * spec.std)


def build(spec_name: str, qtype: str) -> tuple[Path, Path]:
    """(GGUF file, config directory) of ``spec_name`` quantized to ``qtype``, made on first use."""
    spec = SPECS[spec_name]
    out = CACHE / spec.key()
    out.mkdir(parents=True, exist_ok=True)
    config_dir = out / "config"
    path = out / f"{spec.name}-{qtype}.gguf"
    if (config_dir / "config.json").exists() and path.exists():
        return path, config_dir
    if spec.name.endswith("-bench"):
        from accelerate import init_empty_weights

        with init_empty_weights():
            model_class(spec).from_config(spec.config).save_config(config_dir)
        _write(path, _random_tensors(spec), qtype)
    else:
        model = _dense_model(spec)
        model.save_pretrained(config_dir)
        _write(path, ((k, v.float().numpy()) for k, v in model.state_dict().items()), qtype)
    return path, config_dir


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in SPECS:
        print(f"usage: python -m tests.diffusers_models {{{','.join(SPECS)}}} TYPE [TYPE ...]", file=sys.stderr)
        return 2
    for qtype in argv[1:]:
        print(build(argv[0], qtype)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
