"""llama.cpp's own Metal kernels (harness/llama_metal.py) in the Linux harness, launched with llama.cpp's host
geometry, against the exact product of ggml's dequantized weights (float64) within the NMSE bound of llama.cpp's
tests/test-backend-ops.cpp (mul_mat and mul_mat_id: 5e-4; get_rows: the default 1e-7). The mat-vec kernels
accumulate f32 activations in float32, so they are also held to a tight per-output bound; mul_mm rounds
weights and activations to half, which the NMSE bound covers.

Weights are random normal rows quantized by ggml (the oracle library); shapes are small (N = 64-96,
K = 256-512, M <= 40) because the harness runs about 4 ns per multiply-add."""

import re
import subprocess

import numpy as np
import pytest

from gguf_dequant.oracles import ggml
from harness import llama_metal, msl_harness

pytestmark = [
    pytest.mark.msl,
    pytest.mark.skipif(llama_metal.why_unavailable() is not None, reason=str(llama_metal.why_unavailable())),
    pytest.mark.skipif(not ggml.available(), reason=f"ggml oracle: {ggml.why_unavailable()}"),
]

NMSE_MUL_MAT = 5e-4  # test_mul_mat / test_mul_mat_id::max_nmse_err
NMSE_DEFAULT = 1e-7  # test_case::max_nmse_err (test_get_rows keeps it)
MAT_VEC_TYPES = ["q4_0", "q8_0", "q4_K", "q5_K", "q6_K", "iq4_xs", "mxfp4", "f16"]
MAT_VEC_TYPES += ["q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "iq4_nl", "tq2_0", "q1_0", "q2_0"]  # non-IQ-grid types


def nmse(ref: np.ndarray, got: np.ndarray) -> float:
    """test-backend-ops' normalized mean squared error, sum((a - b)^2) / sum(a^2), a the reference."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(((ref - got) ** 2).sum() / (ref ** 2).sum())


def weights(qtype: str, shape: tuple, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(GGUF blocks (..., N, bytes per row), ggml's dequantization of them in float64)."""
    type_id = llama_metal.TYPES[qtype][0]
    rows = np.random.default_rng(seed).standard_normal((int(np.prod(shape[:-1])), shape[-1])).astype(np.float32)
    raw = ggml.quantize(type_id, rows)
    decoded = ggml.to_float(type_id, raw).reshape(shape).astype(np.float64)
    return raw.reshape(*shape[:-1], -1), decoded


def activations(shape: tuple, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_mat_vec(y: np.ndarray, w: np.ndarray, x: np.ndarray):
    """NMSE within test-backend-ops' bound, and every output within 1e-5 of sum |w x| (float32 accumulation
    of exact products: the observed error is about 1e-7)."""
    x64 = x.astype(np.float64)
    ref = x64 @ w.T
    assert np.isfinite(y).all()
    assert nmse(ref, y) < NMSE_MUL_MAT
    scale = np.abs(x64) @ np.abs(w).T
    assert (np.abs(y - ref) <= 1e-5 * scale).all(), f"max normalized error {(np.abs(y - ref) / scale).max():.3g}"


# ---- the kernels ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", MAT_VEC_TYPES)
def test_mul_mv(qtype):
    raw, w = weights(qtype, (64, 512), seed=1)
    x = activations((1, 512), seed=2)
    launches = llama_metal.mul_mv(qtype, raw, x)
    suffix = "_4" if qtype == "f16" else ""
    assert [la.host_name for la in launches] == [f"kernel_mul_mv_{qtype}_f32{suffix}"]
    check_mat_vec(llama_metal.run(launches), w, x)


@pytest.mark.parametrize("qtype", ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m"])
def test_mul_mv_iq_grid_types(qtype):
    """The IQ grid types (K = 1024: 32 chunks of 32 per row, below which llama.cpp splits rows across lanes)."""
    raw, w = weights(qtype, (16, 1024), seed=15)
    x = activations((1, 1024), seed=16)
    launches = llama_metal.mul_mv(qtype, raw, x)
    assert [la.host_name for la in launches] == [f"kernel_mul_mv_{qtype}_f32"]
    check_mat_vec(llama_metal.run(launches), w, x)


def test_mul_mv_several_rows():
    """IQ4_XS has no ext kernel: llama.cpp runs kernel_mul_mv with one grid row per src1 row."""
    raw, w = weights("iq4_xs", (64, 512), seed=3)
    x = activations((3, 512), seed=4)
    launches = llama_metal.mul_mv("iq4_xs", raw, x)
    assert launches[0].groups[1] == 3
    check_mat_vec(llama_metal.run(launches), w, x)


@pytest.mark.parametrize("qtype,m,host", [("q4_K", 5, "kernel_mul_mv_ext_q4_K_f32_r1_5"),
                                          ("q4_K", 8, "kernel_mul_mv_ext_q4_K_f32_r1_4"),
                                          ("q8_0", 2, "kernel_mul_mv_ext_q8_0_f32_r1_2"),
                                          ("mxfp4", 6, "kernel_mul_mv_ext_mxfp4_f32_r1_3")])
def test_mul_mv_ext(qtype, m, host):
    raw, w = weights(qtype, (64, 512), seed=5)
    x = activations((m, 512), seed=6)
    launches = llama_metal.mul_mv_ext(qtype, raw, x)
    assert [la.host_name for la in launches] == [host]
    check_mat_vec(llama_metal.run(launches), w, x)


@pytest.mark.parametrize("qtype,n,m", [("q4_K", 96, 40), ("q8_0", 64, 32), ("q6_K", 64, 32), ("q4_0", 64, 32)])
def test_mul_mm(qtype, n, m):
    """64 x 32 tiles; (96, 40) has partial tiles in both directions (bounds-checked output)."""
    raw, w = weights(qtype, (n, 512), seed=7)
    x = activations((m, 512), seed=8)
    launches = llama_metal.mul_mm(qtype, raw, x)
    assert [la.host_name for la in launches] == [f"kernel_mul_mm_{qtype}_f32"]
    y = llama_metal.run(launches)
    assert y.shape == (m, n) and np.isfinite(y).all()
    assert nmse(x.astype(np.float64) @ w.T, y) < NMSE_MUL_MAT


@pytest.mark.parametrize("broadcast", [True, False], ids=["x_per_token", "x_per_slot"])
def test_mul_mm_id(broadcast):
    n_exp, n, k, n_tok, n_used = 4, 64, 256, 40, 2
    raw, w = weights("q4_K", (n_exp, n, k), seed=9)
    rng = np.random.default_rng(10)
    ids = np.stack([rng.choice(n_exp, n_used, replace=False) for _ in range(n_tok)]).astype(np.int32)
    x = activations((n_tok, k) if broadcast else (n_tok, n_used, k), seed=11)
    launches = llama_metal.mul_mm_id("q4_K", raw, x, ids)
    assert [la.host_name for la in launches] == ["kernel_mul_mm_id_map0_ne20_2", "kernel_mul_mm_id_q4_K_f32"]
    y = llama_metal.run(launches)
    xs = np.broadcast_to(x[:, None, :], (n_tok, n_used, k)) if broadcast else x
    ref = np.einsum("tuk,tunk->tun", xs.astype(np.float64), w[ids])
    assert y.shape == (n_tok, n_used, n) and np.isfinite(y).all()
    assert nmse(ref, y) < NMSE_MUL_MAT


@pytest.mark.parametrize("x_shape", ["TK", "T1K", "TUK"])
def test_mul_mv_id(x_shape):
    """Below 32 tokens llama.cpp runs one mat-vec per slot on its expert's rows (x per token, in either
    form, or per slot)."""
    n_exp, n, k, n_tok, n_used = 4, 64, 256, 3, 2
    raw, w = weights("q4_K", (n_exp, n, k), seed=16)
    rng = np.random.default_rng(17)
    ids = np.stack([rng.choice(n_exp, n_used, replace=False) for _ in range(n_tok)]).astype(np.int32)
    x = activations({"TK": (n_tok, k), "T1K": (n_tok, 1, k), "TUK": (n_tok, n_used, k)}[x_shape], seed=18)
    launches = llama_metal.mul_mat_id("q4_K", raw, x, ids)
    assert [la.host_name for la in launches] == ["kernel_mul_mv_id_q4_K_f32"]
    y = llama_metal.run(launches)
    xs = np.broadcast_to(x.reshape(n_tok, -1, k), (n_tok, n_used, k))
    assert y.shape == (n_tok, n_used, n)
    for u in range(n_used):
        for t in range(n_tok):
            check_mat_vec(y[t, u][None], w[ids[t, u]], xs[t, u][None])


@pytest.mark.parametrize("qtype", ["q4_K", "q6_K", "q8_0"])
def test_get_rows(qtype):
    """Rows decode to ggml's values (equal up to the sign of zero: llama.cpp's formulas can give -0)."""
    raw, w = weights(qtype, (32, 512), seed=12)
    rows = np.array([3, 0, 31, 3, 17], np.int32)
    y = llama_metal.run(llama_metal.get_rows(qtype, raw, rows))
    assert nmse(w[rows], y) < NMSE_DEFAULT
    assert np.array_equal(y, w[rows].astype(np.float32))


# ---- how they run ----------------------------------------------------------------------------------------

def test_edits_are_exactly_the_listed_ones():
    """Every changed line is one of the edits, checked here independently of the code that makes them."""
    kept = llama_metal.launched_host_names()
    kinds = set()
    for name, line, original, edited in llama_metal.edited_lines():
        where = f"{name}:{line}"
        host = re.match(r'\s*template\s*\[\[\s*host_name\(\s*"(\w+)"', original)
        if edited == "":
            assert host and host.group(1) not in kept and original.rstrip().endswith(";"), where
            kinds.add("drop-instantiations")
        elif original.replace("(*", "(&") == edited or edited.replace(" &disp_fn>", " disp_fn>") == original:
            assert "template" in original or original.lstrip().startswith(("typename", "void")), where
            kinds.add("function-reference-params")
        elif original.replace("constant float *", "constant const float *") == edited:
            kinds.add("const-constant-params")
        else:
            assert re.sub(r"(, 0)+\}", "}", edited) == original, f"{where}: unexplained edit {original!r} -> {edited!r}"
            assert re.match(r"\s*(float|half)[234] ", original), where
            kinds.add("pad-vector-braces")
    assert kinds == {e[0] for e in llama_metal.EDITS}
    assert not kept - {e.host_name for path in ("mul_mv.metal", "mul_mm.metal", "quantize.metal")
                        for e in msl_harness.prepare(llama_metal.prepare() / path).entries}


def test_argument_structs_have_the_c_layout(tmp_path):
    """The numpy dtypes built from ggml-metal-impl.h match the C compiler's offsets and sizes."""
    structs = ["ggml_metal_kargs_mul_mv", "ggml_metal_kargs_mul_mv_ext", "ggml_metal_kargs_mul_mm",
               "ggml_metal_kargs_mul_mm_id_map0", "ggml_metal_kargs_mul_mm_id", "ggml_metal_kargs_get_rows"]
    lines = ["#include <stdbool.h>", "#include <stdint.h>", "#include <stddef.h>", "#include <stdio.h>", '#include "ggml-metal-impl.h"',
             "int main(void) {"]
    for s in structs:
        lines.append(f'printf("{s} size %zu\\n", sizeof({s}));')
        for f in llama_metal.kargs_dtype(s).names:
            lines.append(f'printf("{s} {f} %zu\\n", offsetof({s}, {f}));')
    (tmp_path / "layout.c").write_text("\n".join(lines + ["return 0; }"]))
    exe = tmp_path / "layout"
    subprocess.run([msl_harness.CLANG, "-I", str(llama_metal.prepare()), str(tmp_path / "layout.c"), "-o", str(exe)],
                   check=True)
    c_layout = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    ours = []
    for s in structs:
        dt = llama_metal.kargs_dtype(s)
        ours.append(f"{s} size {dt.itemsize}")
        ours += [f"{s} {f} {dt.fields[f][1]}" for f in dt.names]
    assert c_layout[:-1] == ours


def test_identical_value_races_are_real():
    """The kernels run without the race check do race (every simdgroup stores the same table)."""
    raw, _ = weights("iq4_xs", (64, 256), seed=13)
    (launch,) = llama_metal.mul_mv("iq4_xs", raw, activations((1, 256), seed=14))
    assert launch.host_name in llama_metal.IDENTICAL_VALUE_RACES
    checked = {k: v for k, v in launch.compile_kwargs.items() if k != "race_check"}
    lib = msl_harness.compile(launch.path, **checked)
    with pytest.raises(msl_harness.MslError, match="data race on threadgroup memory"):
        lib.dispatch_threadgroups(launch.host_name, launch.buffers, launch.groups, launch.group,
                                  threadgroup_buffers=launch.threadgroup_buffers)


@pytest.mark.parametrize("qtype,m,family", [("q4_K", 1, "mul_mv"), ("q4_K", 2, "mul_mv"), ("q4_K", 4, "mul_mv_ext"),
                                            ("q8_0", 2, "mul_mv_ext"), ("iq4_xs", 8, "mul_mv"), ("q4_0", 9, "mul_mm")])
def test_mul_mat_picks_llama_cpp_kernel(qtype, m, family):
    raw, _ = weights(qtype, (64, 256), seed=19)
    x = activations((m, 256), seed=0)
    assert [la.host_name for la in llama_metal.mul_mat(qtype, raw, x)] == \
        [la.host_name for la in getattr(llama_metal, family)(qtype, raw, x)]


def test_bad_arguments_name_the_problem():
    raw, _ = weights("q4_K", (64, 256), seed=15)
    with pytest.raises(ValueError, match="kernel_mul_mv_ext"):
        llama_metal.mul_mv_ext("q4_K", raw, activations((2, 256), seed=0))  # K-quants: 4 <= M <= 8
    with pytest.raises(ValueError, match="kernel_mul_mm"):
        llama_metal.mul_mm("q4_K", raw, activations((8, 256), seed=0))
    with pytest.raises(ValueError, match="rows of 288 bytes"):
        llama_metal.mul_mv("q4_K", raw, activations((1, 512), seed=0))
    with pytest.raises(ValueError, match="launches"):
        llama_metal.mul_mv("tq1_0", raw, activations((1, 256), seed=0))  # no Metal mat-vec in llama.cpp
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 1\)"):
        llama_metal.mul_mm_id("q4_K", raw[None], activations((32, 256), seed=0), np.ones((32, 1), np.int32))
