"""Real GGUF files for the transformers tests and benchmark, made offline and cached under .cache/.

Every file is made the way a user's file is: a random-weight checkpoint written by transformers itself (with a
byte-level BPE tokenizer trained here with `tokenizers`), converted by llama.cpp's own `convert_hf_to_gguf.py`
(the tree tools/build_ggml.sh unpacks, with that tree's own gguf-py first on the path), then quantized by
libllama's `llama_model_quantize` (tools/build_llama.sh), as in tests/test_end_to_end.py. Nothing is downloaded.

    python -m tests.transformers_models build SPEC FTYPE [FTYPE ...]   # e.g. lfm2-tiny Q4_K_M
    python -m tests.transformers_models quantize IN OUT FTYPE           # one libllama call (used in a subprocess)

The converter refuses a tokenizer whose pre-tokenizer hash is in none of its tables (a freshly trained one never
is), so it runs with `TextModel.get_vocab_base_pre` answering the architecture's own pre-tokenizer name; the
tokenizer is byte-level BPE like those, so the name describes it truthfully enough for a test model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GGUF_TRANSFORMERS_MODELS", ROOT / ".cache" / "transformers-models"))
LLAMA_CPP = ROOT / ".cache" / "ggml" / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
BUILDER_VERSION = 1  # bump to rebuild every cached file after a change here

# enum llama_ftype in llama.h (llama-cpp-python 0.3.36's llama.cpp). Q5_0 is a type transformers' GGUF code
# does not list; BF16 is the unquantized source.
FTYPES = {"F32": 0, "BF16": 32, "Q8_0": 7, "Q5_0": 8, "Q4_K_M": 15, "Q3_K_M": 12, "IQ4_XS": 30}


@dataclass(frozen=True)
class Spec:
    """One test model: a transformers config class and its arguments, and the pre-tokenizer name to write."""

    name: str
    config_class: str
    config: dict
    pre: str
    tokenizer_vocab: int = 1000
    std: float = 0.05  # N(0, std) for 2-D weights, so logits are far from 0 and quantization error shows
    dtype: str = "float32"  # checkpoint dtype (bfloat16 halves disk and RAM for the big benchmark models)
    convert_args: tuple = ()  # extra convert_hf_to_gguf.py options

    def key(self) -> str:
        blob = json.dumps([BUILDER_VERSION, self.config_class, self.config, self.pre, self.tokenizer_vocab,
                           self.std, self.dtype], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _lfm2_layers(n: int, attention_every: int = 3) -> list[str]:
    return ["full_attention" if i % attention_every == attention_every - 1 else "conv" for i in range(n)]


SPECS = {
    # The packed path (transformers' new loader): conv and attention layers, tied embedding/lm_head.
    "lfm2-tiny": Spec("lfm2-tiny", "Lfm2Config", dict(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, block_auto_adjust_ff_dim=False,
        layer_types=_lfm2_layers(4, 2), tie_word_embeddings=True), pre="lfm2"),
    # mul_mat_id: routed experts (8, top 2) plus a shared expert, linear and full attention layers.
    "qwen35moe-tiny": Spec("qwen35moe-tiny", "Qwen3_5MoeTextConfig", dict(
        vocab_size=1024, hidden_size=256, num_hidden_layers=4,  # llama.cpp writes full_attention_interval = 4
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=64, linear_value_head_dim=64, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=256, shared_expert_intermediate_size=256, max_position_embeddings=512,
        tie_word_embeddings=False), pre="qwen35", convert_args=("--no-mtp",)),
    # The legacy loader (dequantized at load).
    "llama-tiny": Spec("llama-tiny", "LlamaConfig", dict(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False), pre="llama-bpe"),
    # The legacy loader with a tensor processor that is not a pure permutation (experts split and restacked).
    # The expert sizes are transformers' defaults: its GGUF config mapping for qwen2moe does not read them back.
    "qwen2moe-tiny": Spec("qwen2moe-tiny", "Qwen2MoeConfig", dict(
        vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=1408,
        shared_expert_intermediate_size=5632, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False),
        pre="qwen2"),
    # The legacy loader's peak-memory test: big enough (~60 MB in bfloat16) for RSS to measure it.
    "llama-small": Spec("llama-small", "LlamaConfig", dict(
        vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False), pre="llama-bpe"),
    # Benchmarks: an LFM2-350M-sized model (~360M parameters), and a ~1.8B llama (a > 1 GB Q4_K_M file).
    "lfm2-350m": Spec("lfm2-350m", "Lfm2Config", dict(
        vocab_size=65536, hidden_size=1024, intermediate_size=4608, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=8, max_position_embeddings=4096, block_auto_adjust_ff_dim=False,
        layer_types=_lfm2_layers(16, 3), tie_word_embeddings=True), pre="lfm2", dtype="bfloat16", std=0.02),
    # Qwen3.5-0.8B's shape (gated delta-net linear attention, 3 of every 4 layers) with LFM2-350M's vocabulary size.
    "qwen35-0.8b": Spec("qwen35-0.8b", "Qwen3_5TextConfig", dict(
        vocab_size=65536, hidden_size=1024, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=8,
        num_key_value_heads=2, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=16,
        linear_key_head_dim=128, linear_value_head_dim=128, max_position_embeddings=4096,
        tie_word_embeddings=True), pre="qwen35", dtype="bfloat16", std=0.02, convert_args=("--no-mtp",)),
    "llama-2b": Spec("llama-2b", "LlamaConfig", dict(
        vocab_size=32768, hidden_size=2048, intermediate_size=8192, num_hidden_layers=26, num_attention_heads=16,
        num_key_value_heads=8, max_position_embeddings=4096, tie_word_embeddings=False),
        pre="llama-bpe", dtype="bfloat16", std=0.02),
}


def builders_missing() -> str | None:
    """Why the models cannot be built here, or None."""
    from .test_end_to_end import libllama_missing

    if not (LLAMA_CPP / "convert_hf_to_gguf.py").exists():
        return f"llama.cpp's converter is not unpacked at {LLAMA_CPP} (run bash tools/build_ggml.sh)"
    return libllama_missing()


# ------------------------------------------------------------------------------------------------ steps

def train_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """A byte-level BPE trained on a few standard-library sources, saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [str(stdlib / n) for n in ("argparse.py", "typing.py", "inspect.py", "dataclasses.py", "pathlib.py")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|pad|>", "<|startoftext|>", "<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(files, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|startoftext|>",
                            eos_token="<|endoftext|>").save_pretrained(out_dir)


def write_checkpoint(spec: Spec, out_dir: Path, seed: int = 0) -> None:
    """Random weights written by transformers' own save_pretrained, with the tokenizer beside them."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    config = getattr(transformers, spec.config_class)(**spec.config, pad_token_id=0, bos_token_id=1,
                                                      eos_token_id=2)
    torch.manual_seed(seed)
    dtype = getattr(torch, spec.dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "conv" not in name:
                p.normal_(0.0, spec.std)
    model.save_pretrained(out_dir)
    train_tokenizer(out_dir, spec.tokenizer_vocab)


_CONVERT_DRIVER = """
import runpy, sys
sys.path[:0] = [{gguf_py!r}, {tree!r}]
import conversion.base
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
def no_sentencepiece_model(self):  # there is no tokenizer.model (and sentencepiece need not be installed)
    raise FileNotFoundError("no tokenizer.model")
conversion.base.TextModel._set_vocab_sentencepiece = no_sentencepiece_model
sys.argv = ["convert_hf_to_gguf.py", {src!r}, "--outfile", {dst!r}, "--outtype", {outtype!r}, *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def convert(spec: Spec, hf_dir: Path, dst: Path) -> None:
    outtype = "f32" if spec.dtype == "float32" else "bf16"
    code = _CONVERT_DRIVER.format(gguf_py=str(LLAMA_CPP / "gguf-py"), tree=str(LLAMA_CPP), pre=spec.pre,
                                  src=str(hf_dir), dst=str(dst), outtype=outtype, args=list(spec.convert_args),
                                  script=str(LLAMA_CPP / "convert_hf_to_gguf.py"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0 or not dst.exists():
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def quantize_in_process(src: Path, dst: Path, ftype: str, nthread: int = 2) -> int:
    from .test_end_to_end import quantize as llama_quantize  # one ctypes binding of llama.h

    return llama_quantize(src, dst, FTYPES[ftype], nthread)


def quantize(src: Path, dst: Path, ftype: str) -> None:
    """llama_model_quantize in a subprocess (a GGML_ASSERT must not take the caller down)."""
    proc = subprocess.run([sys.executable, "-m", "tests.transformers_models", "quantize", str(src), str(dst), ftype],
                          capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if proc.returncode != 0 or not dst.exists():
        raise RuntimeError(f"llama_model_quantize {ftype} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def build(spec_name: str, ftype: str) -> Path:
    """The cached GGUF file of model ``spec_name`` in ``ftype`` (built on first use); returns its path."""
    spec = SPECS[spec_name]
    base = CACHE / spec.key()
    out = base / f"{spec.name}-{ftype}.gguf"
    if out.exists():
        return out
    base.mkdir(parents=True, exist_ok=True)
    hf_dir = base / "hf"
    if not (hf_dir / "tokenizer.json").exists():
        write_checkpoint(spec, hf_dir)
    source_type = "F32" if spec.dtype == "float32" else "BF16"
    source = base / f"{spec.name}-{source_type}.gguf"
    if not source.exists():
        tmp = source.with_suffix(".tmp")
        convert(spec, hf_dir, tmp)
        tmp.rename(source)
    if ftype == source_type:
        return source
    tmp = out.with_suffix(".tmp")
    quantize(source, tmp, ftype)
    tmp.rename(out)
    return out


def hf_dir(spec_name: str) -> Path:
    """The transformers checkpoint the GGUF files were converted from."""
    return CACHE / SPECS[spec_name].key() / "hf"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "quantize":
        sys.exit(quantize_in_process(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]))
    if len(sys.argv) >= 4 and sys.argv[1] == "build":
        for ft in sys.argv[3:]:
            print(build(sys.argv[2], ft))
        sys.exit(0)
    sys.exit(f"usage: python -m tests.transformers_models build {{{','.join(SPECS)}}} FTYPE...\n"
             f"       python -m tests.transformers_models quantize IN OUT {{{','.join(FTYPES)}}}")
