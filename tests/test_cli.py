"""The gguf-dequant command (info, convert, bench) and the backend choice behind gguf_dequant.dequantize.

Small synthetic GGUF files written with gguf.GGUFWriter hold every type gguf-py can write (plus Q2_0,
patched in by hand); converted safetensors files are read back with safetensors and compared with
gguf-py's dequantization bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import gguf_dequant
from gguf_dequant import backends, cli, reference, testing
from gguf_dequant.types import SUPPORTED

ROOT = Path(__file__).resolve().parents[1]
WRITABLE = [t for t in SUPPORTED.values() if t.name != "Q2_0"]  # gguf-py 0.19.0 has no id 42
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _shape_for(t, i):
    """Logical shapes of several ranks: 1-D, 2-D and 3-D tensors, last dimension a multiple of the block."""
    ne0 = max(t.block_elems, 256) * (1 + i % 2)
    return [(ne0,), (3, ne0), (2, 2, ne0)][i % 3]


def _write(path, tensors, arch="llama", extra=None):
    """tensors: list of (name, type name, raw uint8 (rows..., row_bytes) or a float array)."""
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name("cli-test")
    w.add_uint32("test.answer", 42)
    w.add_array("test.list", [1, 2, 3])
    for key, value in (extra or {}).items():
        w.add_string(key, value)
    for name, type_name, arr in tensors:
        if type_name in ("F32", "F16", "I32", "F64", "I8"):
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_shape=arr.shape, raw_dtype=gguf.GGMLQuantizationType[type_name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _raw(t, shape, rng):
    n_blocks = int(np.prod(shape)) // t.block_elems
    raw = testing.random_blocks(t, n_blocks, rng)
    if t.name in ("F32", "F16"):
        return raw.reshape(-1).view(np.float32 if t.name == "F32" else np.float16).reshape(shape)
    return raw.reshape(*shape[:-1], -1)


@pytest.fixture(scope="module")
def all_types(tmp_path_factory):
    """One file with every writable type in 1-D, 2-D and 3-D shapes (special scale values included)."""
    rng = np.random.default_rng(11)
    tensors = []
    for i, t in enumerate(WRITABLE):
        raw = _raw(t, _shape_for(t, i), rng)
        if t.name not in ("F32", "F16"):  # a few blocks with raw (possibly inf/NaN) scales
            flat = raw.reshape(-1, t.block_bytes)
            flat[0] = rng.integers(0, 256, t.block_bytes, dtype=np.uint8)
        tensors.append((f"blk.{i}.{t.name.lower()}.weight", t.name, raw))
    path = _write(tmp_path_factory.mktemp("cli") / "all_types.gguf", tensors)
    return path, {name: (tn, _shape_for(SUPPORTED_BY_NAME[tn], i)) for i, (name, tn, _) in enumerate(tensors)}


SUPPORTED_BY_NAME = {t.name: t for t in SUPPORTED.values()}


def _expected(reader_tensor):
    """gguf-py's float32 dequantization in the logical shape (ggml's to_float for Q1_0, which gguf-py lacks)."""
    logical = tuple(int(d) for d in reversed(reader_tensor.shape))
    if reader_tensor.tensor_type.name == "Q1_0":
        from gguf_dequant.oracles import ggml

        blob = np.ascontiguousarray(reader_tensor.data).view(np.uint8).reshape(-1)
        if ggml.available():
            return ggml.to_float(reader_tensor.tensor_type.value, blob).reshape(logical)
        return reference.dequantize(torch.from_numpy(blob.copy()), "Q1_0").numpy().reshape(logical)
    return gguf.quants.dequantize(reader_tensor.data, reader_tensor.tensor_type).astype(np.float32).reshape(logical)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gguf-dequant: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ------------------------------------------------------------------------------------------------- info

def test_info_lists_every_tensor(all_types, capsys):
    path, info = all_types
    rc, out, err = run(["info", path], capsys)
    assert rc == 0, err
    assert "architecture: llama" in out and "GGUF v3" in out
    lines = out.splitlines()
    for name, (type_name, shape) in info.items():
        row = next(line for line in lines if line.startswith(name + " "))
        fields = row.split()
        assert fields[1] == type_name and fields[2] == "x".join(map(str, shape)), row
        assert fields[-1] == "yes"
    assert f"all {len(info)} tensors can be dequantized" in out


def test_info_reports_unsupported_types(tmp_path, capsys):
    path = _write(tmp_path / "mixed.gguf", [
        ("ids", "I32", np.arange(8, dtype=np.int32)),
        ("w", "F32", np.ones((2, 32), np.float32)),
        ("d", "F64", np.ones(4, np.float64)),
    ])
    rc, out, err = run(["info", path], capsys)
    assert rc == 0, err
    assert "2 of 3 tensors have types gguf-dequant cannot dequantize: ids (I32), d (F64)" in out
    assert "NOT supported: GGML type id 26 cannot be dequantized" in out


# ---------------------------------------------------------------------------------------------- convert

@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # gguf-py on inf/NaN scales
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_convert_every_type_bit_exact(all_types, tmp_path, capsys, dtype):
    from safetensors import safe_open

    path, info = all_types
    out = tmp_path / "out.safetensors"
    rc, stdout, err = run(["convert", path, out, "--dtype", dtype, "--no-progress"], capsys)
    assert rc == 0, err
    assert f"wrote {out}: {len(info)} tensors" in stdout
    reader = gguf.GGUFReader(str(path))
    with safe_open(str(out), "pt") as f:
        assert list(f.keys()) == sorted(info)  # safe_open lists names sorted
        meta = f.metadata()
        assert meta["gguf.architecture"] == "llama" and meta["dtype"] == dtype and meta["format"] == "pt"
        assert json.loads(meta["gguf.tensor_types"]) == {name: tn for name, (tn, _) in info.items()}
        scalars = json.loads(meta["gguf.metadata"])
        assert scalars["general.name"] == "cli-test" and scalars["test.answer"] == 42
        assert "test.list" not in scalars  # arrays (tokenizer tables) stay out of the header
        for t in reader.tensors:
            got = f.get_tensor(t.name)
            assert tuple(got.shape) == info[t.name][1], t.name
            assert got.dtype == DTYPES[dtype]
            testing.assert_bits_equal(got, torch.from_numpy(_expected(t)).to(DTYPES[dtype]), t.name)


def test_convert_keeps_file_order_and_offsets(all_types, tmp_path, capsys):
    path, info = all_types
    out = tmp_path / "o.safetensors"
    assert run(["convert", path, out, "--no-progress"], capsys)[0] == 0
    raw = out.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    names = [k for k in header if k != "__metadata__"]
    assert names == list(info)  # GGUF order
    end = 0
    for name in names:
        begin, stop = header[name]["data_offsets"]
        assert begin == end
        end = stop
    assert 8 + n + end == len(raw)


def _patch_type(path: Path, name: str, new_type: int, new_ne0: int) -> None:
    """Rewrite one tensor info in place (for ids gguf-py cannot write, e.g. Q2_0 = 42)."""
    data = bytearray(path.read_bytes())
    key = len(name).to_bytes(8, "little") + name.encode()
    pos = data.index(key) + len(key)
    n_dims = int.from_bytes(data[pos:pos + 4], "little")
    data[pos + 4:pos + 12] = new_ne0.to_bytes(8, "little")
    tpos = pos + 4 + 8 * n_dims
    data[tpos:tpos + 4] = new_type.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_convert_q2_0_which_gguf_py_cannot_write(tmp_path, capsys):
    from safetensors.torch import load_file

    rng = np.random.default_rng(5)
    q2 = SUPPORTED_BY_NAME["Q2_0"]  # 64 elements in 18 bytes, like Q4_0's 32 in 18
    raw = testing.random_blocks(q2, 3 * 4, rng).reshape(3, -1)
    path = _write(tmp_path / "q2_0.gguf", [("q", "Q4_0", raw)])
    _patch_type(path, "q", 42, 4 * 64)
    rc, out, err = run(["info", path], capsys)
    assert rc == 0 and "Q2_0" in out and "3x256" in out, out + err
    out_path = tmp_path / "q.safetensors"
    assert run(["convert", path, out_path, "--no-progress"], capsys)[0] == 0
    got = load_file(str(out_path))["q"]
    want = reference.dequantize(torch.from_numpy(raw.copy()), "Q2_0")
    testing.assert_bits_equal(got, want, "Q2_0")


def test_convert_skip_unsupported(tmp_path, capsys):
    from safetensors import safe_open

    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    path = _write(tmp_path / "mixed.gguf", [
        ("ids", "I32", np.arange(8, dtype=np.int32)), ("w", "F32", w), ("d", "F64", np.ones(4, np.float64))])
    out = tmp_path / "mixed.safetensors"
    rc, _, err = run(["convert", path, out, "--no-progress"], capsys)
    assert_one_line_error(rc, err, "ids (I32)", "d (F64)", "--on-unsupported skip")
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    rc, _, err = run(["convert", path, out, "--no-progress", "--on-unsupported", "skip"], capsys)
    assert rc == 0, err
    assert "skipping 2 tensor(s) with unsupported types: ids (I32), d (F64)" in err
    with safe_open(str(out), "pt") as f:
        assert list(f.keys()) == ["w"]
        assert json.loads(f.metadata()["gguf.skipped_tensors"]) == {"ids": "I32", "d": "F64"}
        testing.assert_bits_equal(f.get_tensor("w"), torch.from_numpy(w), "w")


def test_convert_progress_bar(all_types, tmp_path, capsys):
    path, info = all_types
    rc, _, err = run(["convert", path, tmp_path / "p.safetensors", "--progress"], capsys)
    assert rc == 0
    assert f"{len(info)}/{len(info)} tensors" in err and "100%" in err


# ------------------------------------------------------------------------------------------------ errors

def test_error_missing_file(tmp_path, capsys):
    for cmd in (["info"], ["convert"], ["bench"]):
        argv = cmd + [tmp_path / "nope.gguf"] + ([tmp_path / "o.safetensors"] if cmd == ["convert"] else [])
        rc, _, err = run(argv, capsys)
        assert_one_line_error(rc, err, "nope.gguf: no such file")


def test_error_not_gguf(tmp_path, capsys):
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)
    rc, _, err = run(["info", p], capsys)
    assert_one_line_error(rc, err, "not a GGUF file")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert_one_line_error(*run(["convert", empty, tmp_path / "o.safetensors"], capsys)[::2], "not a GGUF file")
    rc, _, err = run(["info", tmp_path], capsys)
    assert_one_line_error(rc, err, "is a directory")


def test_error_truncated(all_types, tmp_path, capsys):
    path, _ = all_types
    data = path.read_bytes()
    for cut, needle in ((len(data) - 100, "ends past the end of the file"), (200, "truncated GGUF file"),
                        (10, "truncated GGUF file")):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        for argv in (["info", p], ["convert", p, tmp_path / "o.safetensors"]):
            rc, _, err = run(argv, capsys)
            assert_one_line_error(rc, err, "truncated GGUF file", needle)
        assert not (tmp_path / "o.safetensors").exists()


def test_error_bad_version_and_output_dir(all_types, tmp_path, capsys):
    path, _ = all_types
    data = bytearray(path.read_bytes())
    data[4:8] = (7).to_bytes(4, "little")
    p = tmp_path / "v7.gguf"
    p.write_bytes(bytes(data))
    assert_one_line_error(*run(["info", p], capsys)[::2], "GGUF version 7 is not supported")
    rc, _, err = run(["convert", path, tmp_path / "no" / "dir" / "o.safetensors"], capsys)
    assert_one_line_error(rc, err, "output directory does not exist")


def test_errors_from_the_console_script_have_no_traceback(tmp_path):
    """The installed entry points (python -m gguf_dequant, gguf-dequant) print one line, exit 2."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    proc = subprocess.run([sys.executable, "-m", "gguf_dequant", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("gguf-dequant: error: ") and "Traceback" not in proc.stderr
    exe = Path(sys.executable).with_name("gguf-dequant")
    if exe.exists():  # installed with pip install -e .
        proc = subprocess.run([str(exe), "info", str(tmp_path / "missing.gguf")], capture_output=True, text=True)
        assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------- bench

def test_bench_synthetic_covers_every_type(tmp_path, capsys):
    chart = tmp_path / "bench.png"
    rc, out, err = run(["bench", "--elements", "256", "--repeat", "1", "--chart", chart], capsys)
    assert rc == 0, err
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [[c.strip() for c in r] for r in rows[1:]]
    names = {r[0] for r in rows}
    assert names == set(SUPPORTED_BY_NAME)
    for t in SUPPORTED_BY_NAME:
        backends_for_t = {r[1] for r in rows if r[0] == t}
        assert "reference" in backends_for_t
        if t not in ("Q1_0", "Q2_0", "F32"):  # gguf-py 0.19.0 cannot decode Q1_0, Q2_0; F32 is a view
            assert "gguf-py" in backends_for_t
            assert all(r[5].endswith("x") for r in rows if r[0] == t)
    assert not any(r[1] == "gguf-py" for r in rows if r[0] == "F32"), "gguf-py's F32 view measures no work"
    assert "threads" in out.splitlines()[0]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("llc, says", [(1 << 40, "CACHE-RESIDENT figures"), (1 << 20, "exceeds the 1 MiB last-level cache"),
                                       (None, "last-level cache size unknown")])
def test_bench_header_says_whether_figures_are_cache_resident(monkeypatch, capsys, llc, says):
    monkeypatch.setattr(cli, "last_level_cache_bytes", lambda: llc)
    rc, out, err = run(["bench", "--elements", 1 << 19, "--repeat", "1", "--types", "Q8_0", "--no-chart"], capsys)
    assert rc == 0, err
    assert says in out.splitlines()[0]


def test_last_level_cache_is_read_on_linux():
    llc = cli.last_level_cache_bytes()
    if not Path("/sys/devices/system/cpu/cpu0/cache").is_dir():
        pytest.skip("no Linux sysfs cache description")
    assert llc is not None and llc >= 1 << 20


def test_bench_file(all_types, tmp_path, capsys):
    path, info = all_types
    rc, out, err = run(["bench", path, "--repeat", "1", "--types", "Q4_K,IQ4_XS,F16", "--no-chart"], capsys)
    assert rc == 0, err
    assert str(path) in out
    table = [line for line in out.splitlines() if line.startswith("| Q4_K ") or line.startswith("| IQ4_XS ")
             or line.startswith("| F16 ")]
    assert {line.split("|")[1].strip() for line in table} == {"Q4_K", "IQ4_XS", "F16"}
    assert not (tmp_path / "gguf-dequant-bench.png").exists()


# ------------------------------------------------------------------------------------------------ backends

@pytest.fixture
def fresh_backends(monkeypatch):
    monkeypatch.delenv(backends.ENV_BACKEND, raising=False)
    monkeypatch.delenv(backends.ENV_HUB, raising=False)
    backends.reset()
    yield
    backends.reset()


def _has_local_build() -> bool:
    try:
        return (backends._local_variant() / "metadata.json").exists()
    except Exception:  # noqa: BLE001
        return False


def test_front_door_is_the_backend_choice():
    assert gguf_dequant.dequantize is backends.dequantize
    assert reference.dequantize is not backends.dequantize


def test_automatic_choice_and_explain(fresh_backends):
    name, why = gguf_dequant.explain("cpu")
    if _has_local_build():
        assert name == "kernel" and "local kernel build" in why
    else:
        assert name == "reference" and "no local kernel build" in why
    assert gguf_dequant.explain("cuda")[0] == "reference"
    assert gguf_dequant.explain(torch.empty(1))[0] == name
    assert gguf_dequant.available_backends("cpu")[-1] == "reference"
    assert "metal_jit" not in gguf_dequant.available_backends("cpu")


@pytest.mark.parametrize("via", ["keyword", "env"])
def test_forcing_a_backend(fresh_backends, monkeypatch, via):
    raw = testing.random_blocks("Q6_K", 64, np.random.default_rng(3))
    blob = torch.from_numpy(raw)
    want = reference.dequantize(blob, "Q6_K", torch.float16)

    def call(backend, **kw):
        if via == "env":
            monkeypatch.setenv(backends.ENV_BACKEND, backend)
            return gguf_dequant.dequantize(blob, "Q6_K", torch.float16, **kw), gguf_dequant.explain("cpu", "q6_k")
        return (gguf_dequant.dequantize(blob, "Q6_K", torch.float16, backend=backend, **kw),
                gguf_dequant.explain("cpu", "q6_k", backend=backend))

    got, (name, why) = call("reference")
    assert name == "reference" and "forced" in why and ("environment" in why) == (via == "env")
    testing.assert_bits_equal(got, want, "forced reference")
    with pytest.raises(backends.BackendUnavailableError, match="metal_jit.*forced.*mps"):
        call("metal_jit")
    with pytest.raises(ValueError, match="not a backend"):
        call("fastest")
    if _has_local_build():
        out = torch.empty_like(want)
        got, (name, _) = call("kernel", out=out)
        assert name == "kernel" and got is out
        testing.assert_bits_equal(got, want, "forced kernel")
    else:
        with pytest.raises(backends.BackendUnavailableError, match="no local kernel build"):
            call("kernel")


def test_forced_backend_in_the_command(all_types, tmp_path, capsys, fresh_backends, monkeypatch):
    path, _ = all_types
    rc, _, err = run(["convert", path, tmp_path / "o.safetensors", "--backend", "metal_jit"], capsys)
    assert_one_line_error(rc, err, "metal_jit", "forced")
    monkeypatch.setenv(backends.ENV_BACKEND, "nonsense")
    assert_one_line_error(*run(["info", path], capsys)[::2], "GGUF_DEQUANT_BACKEND='nonsense' is not a backend")
    monkeypatch.setenv(backends.ENV_BACKEND, "reference")
    rc, out, err = run(["convert", path, tmp_path / "o.safetensors", "--no-progress"], capsys)
    assert rc == 0 and "reference x" in out and "kernel x" not in out, out + err


def test_build_that_fails_to_load_falls_back_with_reason(fresh_backends, monkeypatch, tmp_path):
    variant = tmp_path / "torch-variant"
    variant.mkdir()
    (variant / "metadata.json").write_text("{}")  # present but not a loadable build
    monkeypatch.setattr(backends, "_local_variant", lambda: variant)
    name, why = gguf_dequant.explain("cpu")
    assert name == "reference" and "failed to load" in why, why
    raw = torch.from_numpy(testing.random_blocks("Q4_0", 8, np.random.default_rng(0)))
    testing.assert_bits_equal(gguf_dequant.dequantize(raw, "Q4_0"), reference.dequantize(raw, "Q4_0"), "fallback")
    with pytest.raises(backends.BackendUnavailableError, match="failed to load"):
        gguf_dequant.dequantize(raw, "Q4_0", backend="kernel")


class _WrongKernel:
    """A kernel build that loads but returns wrong bits for Q4_K and lacks IQ1_M."""

    def supported_devices(self):
        return ("cpu",)

    def supported_types(self):
        return frozenset(t.id for t in SUPPORTED.values() if t.name != "IQ1_M")

    def dequantize(self, blob, qtype, dtype, out=None):
        r = reference.dequantize(blob, qtype, dtype, out=out)
        if qtype == 12:
            r.view(-1)[0] += 1
        return r


def test_wrong_kernel_is_never_used(fresh_backends):
    backends._kernels["cpu"] = (_WrongKernel(), "fake build")
    assert gguf_dequant.explain("cpu", "Q8_0")[0] == "kernel"
    name, why = gguf_dequant.explain("cpu", "Q4_K")
    assert name == "reference" and "different from the reference" in why
    name, why = gguf_dequant.explain("cpu", "IQ1_M")
    assert name == "reference" and "does not support IQ1_M" in why
    raw = torch.from_numpy(testing.random_blocks("Q4_K", 4, np.random.default_rng(0)))
    testing.assert_bits_equal(gguf_dequant.dequantize(raw, "Q4_K"), reference.dequantize(raw, "Q4_K"), "Q4_K")
    with pytest.raises(backends.BackendUnavailableError, match="cannot serve Q4_K"):
        gguf_dequant.dequantize(raw, "Q4_K", backend="kernel")


def test_hub_kernel_is_opt_in_on_cpu(fresh_backends, monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "_local_variant", lambda: tmp_path / "none")
    assert "GGUF_DEQUANT_HUB=1 enables it" in gguf_dequant.explain("cpu")[1]
    calls = []
    import kernels

    def fake_get_kernel(repo, version=None, **kw):
        calls.append((repo, version))
        raise RuntimeError("offline")

    monkeypatch.setattr(kernels, "get_kernel", fake_get_kernel)
    monkeypatch.setenv(backends.ENV_HUB, "1")
    backends.reset()
    name, why = gguf_dequant.explain("cpu")
    assert name == "reference" and "offline" in why
    assert calls == [("kernels-community/gguf-dequant", 1)]


# ---------------------------------------------------------------------------------------- bounded memory

def test_convert_reuses_one_output_buffer(tmp_path, capsys, monkeypatch):
    """Instrumented: every tensor is decoded into the same buffer, sized for the largest output tensor."""
    rng = np.random.default_rng(2)
    shapes = [(64, 512), (128, 512), (32, 256), (96, 512), (512,)]
    t = SUPPORTED_BY_NAME["Q8_0"]
    path = _write(tmp_path / "many.gguf", [(f"t{i}", "Q8_0", _raw(t, s, rng)) for i, s in enumerate(shapes)])
    seen = []
    real = backends.dequantize

    def spy(blob, qtype, dtype=torch.float32, *, out=None, backend=None):
        assert out is not None, "convert must decode into its reused buffer"
        seen.append((out.untyped_storage().data_ptr(), out.untyped_storage().nbytes(), out.numel()))
        return real(blob, qtype, dtype, out=out, backend=backend)

    monkeypatch.setattr(backends, "dequantize", spy)
    assert run(["convert", path, tmp_path / "m.safetensors", "--no-progress"], capsys)[0] == 0
    assert len(seen) == len(shapes)
    largest = max(int(np.prod(s)) for s in shapes)
    assert {ptr for ptr, _, _ in seen} == {seen[0][0]}
    assert {nbytes for _, nbytes, _ in seen} == {largest * 4}


_RSS_CHILD = r"""
import sys, torch
from gguf_dequant import backends, cli
backends.explain("cpu", "Q8_0")                       # load the backend first: part of the fixed overhead
torch.empty(1 << 20).fill_(0)
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
base = rss("VmRSS")
rc = cli.main(["convert", sys.argv[1], sys.argv[2], "--no-progress"])
print(rc, base, rss("VmHWM"))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_convert_peak_memory_is_about_one_tensor(tmp_path):
    """Measured: 8 Q8_0 tensors of 16 MiB float32 output each (128 MiB total); the peak grows by far less."""
    rng = np.random.default_rng(4)
    t = SUPPORTED_BY_NAME["Q8_0"]
    shape = (1024, 4096)
    tensors = [(f"blk.{i}.w", "Q8_0", _raw(t, shape, rng)) for i in range(8)]
    path = _write(tmp_path / "big.gguf", tensors)
    del tensors
    one_out = 4 * shape[0] * shape[1]
    one_in = shape[0] * shape[1] // 32 * 34
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), str(tmp_path / "big.safetensors")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rc, base, peak = map(int, proc.stdout.split()[-3:])
    assert rc == 0
    growth = peak - base
    total_out = 8 * one_out
    assert growth < one_out + one_in + (24 << 20), (
        f"peak RSS grew by {growth / 2**20:.1f} MiB for one output tensor of {one_out / 2**20:.0f} MiB "
        f"(total output {total_out / 2**20:.0f} MiB)")
