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
