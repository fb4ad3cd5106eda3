"""The type registry, the generated copies of it and of the lookup tables, and build.toml."""

import tomllib
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_dequant import reference, tables, testing
from gguf_dequant.launch import ELEMS_PER_THREAD
from gguf_dequant.tools import gen_metal
from gguf_dequant.types import (GGML_TYPE_COUNT, SUBNORMAL_OUTPUTS, SUPPORTED, QuantType, UnsupportedTypeError,
                                kernel_files, resolve)

ROOT = Path(__file__).resolve().parents[1]


def test_28_supported_types_with_gguf_py_geometry():
    assert len(SUPPORTED) == 28
    for t in SUPPORTED.values():
        if t.name == "Q2_0":  # not in gguf-py 0.19.0
            assert (t.id, t.block_elems, t.block_bytes) == (42, 64, 18)
            continue
        g = gguf.GGMLQuantizationType[t.name]
        assert g.value == t.id
        assert gguf.GGML_QUANT_SIZES[g] == (t.block_elems, t.block_bytes)


@pytest.mark.parametrize("spelling", [12, "Q4_K", "q4_k", " q4_K ", "GGML_TYPE_Q4_K",
                                      gguf.GGMLQuantizationType.Q4_K, np.int64(12)])
def test_resolve_spellings(spelling):
    assert resolve(spelling) == SUPPORTED[12]
    assert isinstance(resolve(spelling), QuantType)


@pytest.mark.parametrize("type_id, reason", [
    (4, "removed"), (5, "removed"), (9, "intermediate"), (15, "intermediate"), (24, "integer"),
    (28, "F64"), (31, "removed"), (33, "removed"), (36, "removed"), (38, "removed"),
    (43, "unknown"), (142, "unknown"), (-1, "unknown")])
def test_refused_ids_name_the_id_and_reason(type_id, reason):
    with pytest.raises(UnsupportedTypeError) as err:
        resolve(type_id)
    assert f"id {type_id}" in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("bad", ["Q8_1", "q8_k", "i32", "Q3_0", ""])
def test_refused_names(bad):
    with pytest.raises(UnsupportedTypeError, match=repr(bad)):
        resolve(bad)


@pytest.mark.parametrize("bad", [1.0, True, None, b"Q4_0"])
def test_refused_non_type_arguments(bad):
    with pytest.raises(TypeError, match="GGML type"):
        resolve(bad)


def test_every_id_is_known():
    for type_id in range(GGML_TYPE_COUNT):
        try:
            resolve(type_id)
        except UnsupportedTypeError as e:
            assert "unknown" not in str(e), type_id


def test_launch_description_divides_blocks():
    for t in SUPPORTED.values():
        s = ELEMS_PER_THREAD[t.name]
        assert t.block_elems == 1 or (t.block_elems % s == 0 and s % 4 == 0), t.name


def test_generated_files_are_current():
    assert gen_metal.main(["--check"]) == 0, "run python -m gguf_dequant.tools.gen_metal"


def test_generated_tables_match_gguf_py_bytes():
    """The C tables hold exactly gguf-py's grid values (parsed back from the generated header)."""
    text = (ROOT / "metal" / "gguf_tables.h").read_text()
    for name in ("iq2xxs", "iq2xs", "iq2s", "iq3xxs", "iq3s", "iq1s"):
        start = text.index(f"{name}_grid[")
        body = text[text.index("{", start):text.index("};", start)]
        values = np.array([int(v) for v in body.replace("{", " ").replace("}", " ").replace(",", " ").split()])
        assert np.array_equal(values, tables.grid(name).ravel()), name
    gguf.quants.IQ2_S.init_grid()
    assert tables.grid("iq2s").shape == (1024, 8) and tables.grid("iq1s").shape == (2048, 8)


def test_build_toml_parses_and_lists_every_source():
    from kernels import _rust

    build = _rust.Build.open(str(ROOT))
    assert {str(b) for b in build.general.backends} >= {"Cpu", "Metal"} or len(build.general.backends) == 2
    config = tomllib.loads((ROOT / "build.toml").read_text())
    assert config["general"]["name"] == "gguf-dequant" and config["general"]["edition"] == 5
    listed = set(config["torch"]["src"])
    for kernel in config["kernel"].values():
        listed |= set(kernel["src"])
        for d in kernel.get("include", []):
            assert (ROOT / d).is_dir(), d
    for src in listed:
        assert (ROOT / src).is_file(), f"build.toml names {src}, which does not exist"
    metal_src = set(config["kernel"]["gguf_dequant_metal"]["src"])
    cpu_src = set(config["kernel"]["gguf_dequant_cpu"]["src"])
    for f in (ROOT / "metal").glob("*.metal"):
        rel = f"metal/{f.name}"
        assert rel in metal_src and rel in cpu_src, f"{rel} is not listed in build.toml"
    assert sorted(f"metal/{f}" for f in kernel_files()) == sorted(s for s in metal_src if s.endswith(".metal"))


def test_readme_type_table_matches_registry():
    import re

    rows = re.findall(r"^\| (\d+) \| (\w+) \| (\d+) \| (\d+) \|", (ROOT / "README.md").read_text(), re.M)
    assert [(int(i), n, int(e), int(b)) for i, n, e, b in rows] == [
        (t.id, t.name, t.block_elems, t.block_bytes) for t in SUPPORTED.values()]


def test_ci_runs_the_readme_test_command():
    import re

    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) == 2, commands
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def _subnormal(y: torch.Tensor) -> torch.Tensor:
    a = y.abs()
    return (a > 0) & (a < torch.finfo(torch.float32).tiny)


# The smallest nonzero scale of each kind: float16 2^-24, E8M0 2^-127, UE4M3 2^-9 (bit patterns).
_SMALLEST_SCALE = {"f16": 0x0001, "iq1m": 0x0001, "e8m0": 0x00, "ue4m3": 0x01}


@pytest.mark.parametrize("name", [t.name for t in SUPPORTED.values()])
def test_subnormal_outputs_lists_exactly_the_types_with_subnormal_values(name):
    """SUBNORMAL_OUTPUTS lets the CPU's bfloat16 store skip its subnormal check for the other types. With every
    scale at its smallest nonzero value (and random quants), the listed types do produce float32 subnormals and
    no other type does; F32 and BF16 hold them directly."""
    t = resolve(name)
    rng = np.random.default_rng(t.id)
    raw = rng.integers(0, 256, size=(512, t.block_bytes), dtype=np.uint8)
    if name == "F32":
        raw = np.arange(1, 512 * 4 + 1, dtype=np.uint32).view(np.uint8).reshape(-1, 4)  # 2^-149 upwards
    elif name == "BF16":
        raw = np.arange(1, 512 * 2 + 1, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    for offset, kind in testing.SCALE_FIELDS[name]:
        for block in raw:
            buf = bytearray(block.tobytes())
            testing.set_scale(buf, offset, kind, _SMALLEST_SCALE[kind])
            block[:] = np.frombuffer(buf, dtype=np.uint8)
    y = reference.dequantize(torch.from_numpy(raw.reshape(-1).copy()), name, torch.float32)
    assert bool(_subnormal(y).any()) == (name in SUBNORMAL_OUTPUTS), name


@pytest.mark.parametrize("name", sorted(set(t.name for t in SUPPORTED.values()) - SUBNORMAL_OUTPUTS))
@given(data=st.data())
@settings(max_examples=50, deadline=None)
def test_types_outside_subnormal_outputs_never_produce_subnormals(name, data):
    """Random blocks with scale fields forced to special values (the smallest subnormal among them)."""
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=16))
    blob = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    assert not _subnormal(reference.dequantize(blob, name, torch.float32)).any()
