"""End to end with a real quantizer: llama.cpp's own ``llama_model_quantize`` makes the files.

A tiny llama-architecture GGUF with random float32 weights is written with gguf-py's GGUFWriter, quantized
by ``llama_model_quantize`` (libllama from tools/build_llama.sh, called through ctypes in a subprocess, so
that a GGML_ASSERT cannot take pytest down) into Q4_K_M, Q6_K, IQ4_XS and Q8_0 files, each converted with
``gguf-dequant convert``, and every tensor of the result is checked bit for bit against gguf-py's
dequantization of the quantized file.

Skipped with the reason when libllama is not built, unless GGUF_REQUIRE_GGML=1 (then it fails).
Run this file as a script to quantize by hand:
    python tests/test_end_to_end.py IN.gguf OUT.gguf Q4_K_M
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIBDIR = Path(os.environ.get("LLAMA_LIBDIR", ROOT / ".cache" / "llama" / "lib"))
SHARED_SUFFIX = ".dylib" if sys.platform == "darwin" else ".so"  # what tools/build_llama.sh installs

# enum llama_ftype in llama.h (llama-cpp-python 0.3.36's vendored llama.cpp).
FTYPES = {"Q8_0": 7, "Q4_K_M": 15, "Q6_K": 18, "IQ4_XS": 30}
# The GGML types each file holds with llama.cpp's default mixing rules (Q4_K_M and IQ4_XS keep some tensors,
# e.g. output.weight, in Q6_K; 1-D tensors stay F32), as observed with this llama.cpp version.
EXPECTED_TYPES = {"Q8_0": {"Q8_0", "F32"}, "Q4_K_M": {"Q4_K", "Q6_K", "F32"}, "Q6_K": {"Q6_K", "F32"},
                  "IQ4_XS": {"IQ4_XS", "Q6_K", "F32"}}


class _QuantizeParams(ctypes.Structure):
    # struct llama_model_quantize_params in include/llama.h, field for field.
    _fields_ = [
        ("nthread", ctypes.c_int32),
        ("ftype", ctypes.c_int),  # enum llama_ftype
        ("output_tensor_type", ctypes.c_int),  # enum ggml_type
        ("token_embedding_type", ctypes.c_int),  # enum ggml_type
        ("allow_requantize", ctypes.c_bool),
        ("quantize_output_tensor", ctypes.c_bool),
        ("only_copy", ctypes.c_bool),
        ("pure", ctypes.c_bool),
        ("keep_split", ctypes.c_bool),
        ("dry_run", ctypes.c_bool),
        ("imatrix", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("tt_overrides", ctypes.c_void_p),
        ("prune_layers", ctypes.c_void_p),
        ("max_buf_size", ctypes.c_size_t),
    ]


def libllama_missing() -> str | None:
    if not (LIBDIR / f"libllama{SHARED_SUFFIX}").exists():
        return f"libllama is not built at {LIBDIR} (run bash tools/build_llama.sh)"
    return None


def _load_libllama():
    # The libraries carry a RUNPATH into the build tree; load the installed copies first, in order.
    for dep in ("libggml-base", "libggml-cpu", "libggml"):
        ctypes.CDLL(str(LIBDIR / (dep + SHARED_SUFFIX)), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(str(LIBDIR / f"libllama{SHARED_SUFFIX}"), mode=ctypes.RTLD_GLOBAL)
    lib.llama_backend_init.restype = None
    lib.llama_backend_init.argtypes = []
    lib.llama_model_quantize_default_params.restype = _QuantizeParams
    lib.llama_model_quantize_default_params.argtypes = []
    lib.llama_model_quantize.restype = ctypes.c_uint32
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_QuantizeParams)]
    return lib


def quantize(src: Path, dst: Path, ftype: int, nthread: int = 2) -> int:
    """llama_model_quantize(src -> dst) with llama.cpp's default mixing rules for the llama_ftype id ``ftype``."""
    lib = _load_libllama()
    lib.llama_backend_init()
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    return lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))


def write_tiny_llama(path: Path, seed: int = 0, n_layer: int = 2, n_vocab: int = 64, n_embd: int = 256,
                     n_ff: int = 512, n_head: int = 4) -> None:
    """A random-weight llama GGUF with everything llama.cpp's loader needs (oracles.md section 2.5)."""
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(128)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # ALL_F32
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(n_vocab)])
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([1] * n_vocab)

    def add(name, *shape):  # shape in numpy (logical) order
        scale = 1.0 if len(shape) == 1 else shape[-1] ** -0.5
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    add("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", n_embd)
        add(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        add(f"blk.{i}.attn_k.weight", n_embd, n_embd)
        add(f"blk.{i}.attn_v.weight", n_embd, n_embd)
        add(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        add(f"blk.{i}.ffn_norm.weight", n_embd)
        add(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        add(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        add(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    add("output_norm.weight", n_embd)
    add("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in FTYPES:
        sys.exit(f"usage: python {sys.argv[0]} IN.gguf OUT.gguf {{{','.join(FTYPES)}}}")
    sys.exit(quantize(Path(sys.argv[1]), Path(sys.argv[2]), FTYPES[sys.argv[3]]))


# ------------------------------------------------------------------------------------------------- tests

import pytest  # noqa: E402
import torch  # noqa: E402

from gguf_dequant import testing  # noqa: E402
from gguf_dequant.cli import main as cli_main  # noqa: E402

from .conftest import skip_unless_built  # noqa: E402

pytestmark = pytest.mark.ggml


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    skip_unless_built(libllama_missing())
    path = tmp_path_factory.mktemp("e2e") / "tiny-llama-f32.gguf"
    write_tiny_llama(path)
    return path


@pytest.mark.parametrize("ftype", list(FTYPES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_quantized_by_llama_cpp_then_converted(tiny_llama, tmp_path, ftype, dtype):
    import gguf
    from safetensors import safe_open

    qpath = tmp_path / f"tiny-llama-{ftype}.gguf"
    proc = subprocess.run([sys.executable, __file__, str(tiny_llama), str(qpath), ftype],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"llama_model_quantize failed ({proc.returncode}):\n{proc.stderr[-3000:]}"

    reader = gguf.GGUFReader(str(qpath))
    types_seen = {t.tensor_type.name for t in reader.tensors}
    assert types_seen == EXPECTED_TYPES[ftype], f"{ftype} file holds {sorted(types_seen)}"

    out = tmp_path / f"{ftype}.safetensors"
    assert cli_main(["convert", str(qpath), str(out), "--dtype", dtype, "--no-progress"]) == 0
    torch_dtype = getattr(torch, dtype)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert meta["gguf.architecture"] == "llama"
        tensor_types = json.loads(meta["gguf.tensor_types"])
        assert set(f.keys()) == {t.name for t in reader.tensors}
        for t in reader.tensors:
            got = f.get_tensor(t.name)
            logical = tuple(int(d) for d in reversed(t.shape))
            assert tuple(got.shape) == logical, t.name
            assert got.dtype == torch_dtype
            assert tensor_types[t.name] == t.tensor_type.name
            expected = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(logical)
            testing.assert_bits_equal(got, torch.from_numpy(expected).to(torch_dtype), f"{ftype} {t.name}")
