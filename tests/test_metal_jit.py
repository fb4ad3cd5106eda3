"""The run-time Metal path's exact source string passes the Linux harness: strict compile, lint, and
bit-exact results for every type and output dtype."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gguf_dequant import metal_jit, reference, testing
from harness import msl_harness, msl_lint

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES

pytestmark = [pytest.mark.msl,
              pytest.mark.skipif(not msl_harness.available(), reason="clang-19 is not installed")]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def jit_file():
    path = ROOT / ".cache" / "jit" / "gguf_dequant_jit.metal"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != metal_jit.source():
        path.write_text(metal_jit.source())
    return path


def test_source_inlines_every_kernel_file_and_no_include():
    src = metal_jit.source()
    assert '#include "' not in src
    for path in metal_jit.kernel_files():
        assert f"==== {path.name} ====" in src
    assert src.count("struct block_q4_k {") == 1


def test_jit_source_lints_clean(jit_file):
    findings = msl_lint.lint(jit_file)
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_jit_source_matches_reference(jit_file, name, dtype):
    rng = np.random.default_rng(hash(name) % 2**32)
    raw = np.concatenate([testing.random_blocks(name, 40, rng, finite=False).reshape(-1),
                          testing.random_blocks(name, 40, rng).reshape(-1)])
    got = msl_harness.dequantize(name, raw, dtype, path=jit_file)
    expected = reference.dequantize(torch.from_numpy(raw), name, dtype)
    testing.assert_bits_equal(got, expected, f"jit {name} -> {dtype}")


def test_kernel_names_follow_the_host_names():
    assert metal_jit.kernel_name("q4_k", torch.bfloat16) == "dequantize_q4_k_bf16"
    assert metal_jit.kernel_name(0, torch.float32) == "dequantize_f32_f32"


def test_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="mps"):
        metal_jit.dequantize(torch.zeros(18, dtype=torch.uint8), "Q4_0")


# ---- one type's library on first use; MSL 3.0 ------------------------------------------------------------

def _harness_library(src: str, name: str, defines=()):
    path = ROOT / ".cache" / "jit" / f"{name}.metal"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != src:
        path.write_text(src)
    return msl_harness.compile(path, defines=list(defines), race_check=False)


@pytest.mark.parametrize("name, dequantize_only, everything", [("Q4_K", 3, 20), ("F16", 9, 60)])
def test_a_types_library_holds_only_its_file(name, dequantize_only, everything):
    """The first call for a type compiles its kernel file only: the kernel counts per library (README)."""
    src = metal_jit.source(qtype=name)
    assert src.count("// ==== ") == 1 and f"==== {metal_jit.types.kernel_file_name(name)} ====" in src
    assert len(_harness_library(src, f"jit-{name}").entries) == dequantize_only
    lib = _harness_library(metal_jit.source(True, name), f"jit-{name}-matmul")
    assert len(lib.entries) == everything
    assert f"mul_mv_{name.lower()}_f32_f32" in lib and f"mul_mm_id_map_{name.lower()}" in lib


def test_msl_3_0_library_has_no_bfloat():
    lib = _harness_library(metal_jit.source(True, "Q4_K"), "jit-Q4_K-matmul", ["__METAL_VERSION__=300"])
    assert lib.entries and not any("bf16" in n for n in lib.entries)
    assert "dequantize_q4_k_f16" in lib and "mul_mm_q4_k_f16_f16" in lib


@pytest.mark.parametrize("release, version", [("13.6.1", 300), ("14.5", 310), ("15.1", 320), ("26.0", 400), ("", 310)])
def test_dtypes_follow_the_macos_release(monkeypatch, release, version):
    from gguf_dequant import backends

    monkeypatch.setattr(metal_jit.platform, "mac_ver", lambda: (release, ("", "", ""), ""))
    assert metal_jit.msl_version() == version
    bfloat = version >= 310
    assert (torch.bfloat16 in metal_jit.dtypes()) == bfloat
    assert metal_jit.supports("BF16", torch.float32) == bfloat and metal_jit.supports("Q4_K", torch.float16)
    if not bfloat:
        with pytest.raises(TypeError, match="MSL 3.1|Shading Language 3.1"):
            metal_jit._need_dtype("Q4_K", torch.float32, torch.bfloat16)
    # the front door gives way to the reference for what this Mac's library lacks, unless forced
    want = "metal_jit" if bfloat else "reference"
    assert backends._with_dtype("metal_jit", metal_jit.resolve("Q4_K"), None, torch.bfloat16) == want
    assert backends._with_dtype("metal_jit", metal_jit.resolve("Q4_K"), "metal_jit", torch.bfloat16) == "metal_jit"
