"""The Linux shader harness: every metal/*.metal file compiled as strict C++ for OpenCL (clang-19 and our
metal_stdlib shim), linted, and run on the CPU with Metal dispatchThreads semantics against the reference,
bit for bit, with guard pages and poisoned outputs (harness/msl_harness.py, msl_lint.py)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_dequant import launch, reference, testing
from harness import msl_harness, msl_lint
from gguf_dequant.types import BY_NAME

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES, implemented

pytestmark = [
    pytest.mark.msl,
    pytest.mark.skipif(not msl_harness.available(),
                       reason=f"{msl_harness.CLANG} is not installed (apt-get install clang-19); "
                              "the Metal shader harness compiles .metal files with it"),
]

METAL_FILES = sorted(msl_harness.METAL.glob("*.metal"))
BAD_SNIPPETS = sorted((Path(__file__).parent / "msl_bad").glob("*.metal"))
HERE = Path(__file__).parent


def _types_of(path: Path) -> list[str]:
    return [n for n in ALL_TYPES if msl_harness.kernel_file(n).resolve() == path.resolve()]


def _need(name: str):
    path = msl_harness.kernel_file(name)
    if not path.exists():
        pytest.skip(f"{path.name} not written yet")
    if not implemented(name):
        pytest.skip(f"no reference module for {name} yet")


def _expected(raw: bytes, name: str, dtype) -> torch.Tensor:
    blob = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    return reference.dequantize(blob, name, dtype).reshape(-1)


# ---- (a) every kernel file compiles in strict mode, exposes its host names and lints clean ----------

@pytest.mark.parametrize("path", METAL_FILES, ids=lambda p: p.name)
def test_metal_file_compiles_strict(path):
    lib = msl_harness.compile(path)
    assert lib.entries, f"{path.name}: no kernels found"
    for name in _types_of(path):
        for suffix in ("f32", "f16", "bf16"):
            assert f"dequantize_{name.lower()}_{suffix}" in lib, f"{path.name}: missing host name for {name}"


@pytest.mark.parametrize("path", METAL_FILES, ids=lambda p: p.name)
def test_metal_file_compiles_as_msl_3_0(path):
    """MSL 3.0 (macOS 13) has no bfloat: the shim then has none either, so any unguarded bfloat is a compile
    error; every bf16 kernel is left out and the f32/f16 ones stay."""
    at_310 = set(msl_harness.compile(path, race_check=False).entries)
    at_300 = set(msl_harness.compile(path, defines=["__METAL_VERSION__=300"], race_check=False).entries)
    assert at_300 == {name for name in at_310 if "bf16" not in name}, f"{path.name}: {sorted(at_310 - at_300)}"
    assert any(name.endswith("_f16") for name in at_300)


@pytest.mark.parametrize("path", METAL_FILES, ids=lambda p: p.name)
def test_metal_file_lint_clean(path):
    findings = msl_lint.lint(path)
    assert not findings, "\n".join(map(str, findings))


# ---- (b) the harness against the reference, bit for bit ---------------------------------------------

@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
@settings(max_examples=25)
@given(data=st.data())
def test_harness_matches_reference(name, dtype, data):
    _need(name)
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=8))
    got = msl_harness.dequantize(name, raw, dtype)  # asserts that every element was written
    testing.assert_bits_equal(got, _expected(raw, name, dtype), f"harness {name} -> {dtype}")


@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_harness_partial_last_threadgroup(name, dtype):
    _need(name)
    t = BY_NAME[name]
    # enough blocks for more than one threadgroup, with the last one partial
    s = launch.ELEMS_PER_THREAD[name]
    elems_per_group = launch.THREADGROUP_SIZE * s
    n_blocks = -(-(elems_per_group + 3 * max(s, t.block_elems)) // t.block_elems)
    if t.block_elems == 1:
        n_blocks += 5  # a tail thread with fewer than S elements too
    threads, group = launch.grid(name, n_blocks * t.block_elems)
    assert threads > group and threads % group, (threads, group)
    raw = testing.random_blocks(name, n_blocks, np.random.default_rng(n_blocks), finite=False).tobytes()
    got = msl_harness.dequantize(name, raw, dtype)
    testing.assert_bits_equal(got, _expected(raw, name, dtype), f"harness {name} -> {dtype}, {n_blocks} blocks")


@pytest.mark.parametrize("path", METAL_FILES, ids=lambda p: p.name)
def test_ubsan_clean(path):
    names = [n for n in _types_of(path) if implemented(n)]
    if not names:
        pytest.skip(f"{path.name}: no type with a reference module")
    for name in names:
        raw = testing.random_blocks(name, 64, np.random.default_rng(1), finite=False).tobytes()
        for dtype in OUT_DTYPES:
            # A UBSan report raises MslError. Without the matmul kernels (GGUF_NO_MATMUL): their UBSan build is
            # test_msl_matmul.py::test_ubsan_build's, and each file's would take a minute to compile.
            got = msl_harness.dequantize(name, raw, dtype, ubsan=True, defines={"GGUF_NO_MATMUL": None})
            testing.assert_bits_equal(got, _expected(raw, name, dtype), f"UBSan build {name} -> {dtype}")


# ---- (c) the lint rejects what Metal rejects ------------------------------------------------------------

def _expected_rule(path: Path) -> str:
    return re.search(r"//\s*expect:\s*(\S+)", path.read_text()).group(1)


@pytest.mark.parametrize("path", BAD_SNIPPETS, ids=lambda p: p.stem)
def test_lint_catches_bad_snippet(path):
    rule = _expected_rule(path)
    findings = msl_lint.lint(path)
    assert rule in {f.rule for f in findings}, f"{path.name}: expected [{rule}], got:\n" + "\n".join(map(str, findings))
    assert all(f.file == str(path.resolve()) or f.rule == "compile" for f in findings)


def test_every_lint_rule_has_a_bad_snippet():
    required = {"compile", "compile-warning", "recursion", "new-delete", "throw-try", "double", "std", "goto",
                "static-local", "param-address-space", "duplicate-buffer", "include", "threadgroup-scope",
                "threadgroup-size", "threadgroup-init", "function-pointer"}
    proven = {_expected_rule(p) for p in BAD_SNIPPETS}
    assert required <= proven, f"rules without a snippet: {sorted(required - proven)}"
    assert proven <= set(msl_lint.RULES)


def test_lint_recursion_names_the_cycle():
    findings = [f for f in msl_lint.lint(HERE / "msl_bad" / "recursion.metal") if f.rule == "recursion"]
    assert {f.message for f in findings} == {"recursive call cycle fact -> fact",
                                             "recursive call cycle ping -> pong -> ping"}


# ---- the shim and the launcher ---------------------------------------------------------------------------

SHIM_KERNELS = r"""
#include <metal_stdlib>
using namespace metal;

constant float table[4] = {0.5f, -1.0f, 2.0f, 8.0f};

struct pair_t {
    half a;
    uchar b[2];
};
static_assert(sizeof(pair_t) == 4, "packed like Metal");

kernel void shim_ops(device const uint *src [[buffer(0)]], device float *dst [[buffer(1)]],
                     constant uint &n [[buffer(2)]], uint tid [[thread_position_in_grid]]) {
    if (tid >= n) {
        return;
    }
    const uint x = src[tid];
    float4 v = float4(float(x & 0xFF), float2(1.0f, 2.0f), 3.0f);
    v.xy = v.yx;
    const int4 iv = int4(v);
    const half h = half(float(x)) * 2.0h;
    const bfloat bf = bfloat(as_type<float>(x));
    dst[8 * tid + 0] = v.x + v.w;                                       // 1 + 3
    dst[8 * tid + 1] = float(iv.y) + dot(v, float4(1.0f));              // (x & 0xFF) + sum
    dst[8 * tid + 2] = clamp(float(int(x & 0xF) - 8), -4.0f, 4.0f);
    dst[8 * tid + 3] = select(1.0f, 2.0f, (x & 1) != 0) + float(popcount(x));
    dst[8 * tid + 4] = float(h);
    dst[8 * tid + 5] = float(bf);
    dst[8 * tid + 6] = table[x & 3] * float(max(x >> 28, 3u)) + float(min(int(x & 7), 5));
    dst[8 * tid + 7] = fabs(float(abs(int(x & 0xF) - 9))) + float(extract_bits(x, 4, 4));
}

kernel void positions(device uint4 *dst [[buffer(0)]], uint tid [[thread_position_in_grid]],
                      uint tg [[threadgroup_position_in_grid]], uint tt [[thread_position_in_threadgroup]],
                      uint tsz [[threads_per_threadgroup]], uint lane [[thread_index_in_simdgroup]]) {
    dst[tid] = uint4(tg, tt, tsz, lane);
}

kernel void positions_2d(device uint *dst [[buffer(0)]], uint2 pos [[thread_position_in_grid]],
                         uint2 grid [[threads_per_grid]]) {
    dst[pos.y * grid.x + pos.x] = pos.y * 1000 + pos.x;
}

kernel void skip_first(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]],
                       uint tid [[thread_position_in_grid]]) {
    if (tid != 0) {
        dst[tid] = src[tid];
    }
}

// Off by one: `tid > n` should be `tid >= n` (the launch has one thread more than elements).
kernel void copy_off_by_one(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]],
                            constant uint &n [[buffer(2)]], uint tid [[thread_position_in_grid]]) {
    if (tid > n) {
        return;
    }
    dst[tid] = src[tid];
}

kernel void copy_checked(device const float *src [[buffer(0)]], device float *dst [[buffer(1)]],
                         constant uint &n [[buffer(2)]], uint tid [[thread_position_in_grid]]) {
    if (tid >= n) {
        return;
    }
    dst[tid] = src[tid];
}

kernel void to_int(device const float *src [[buffer(0)]], device int *dst [[buffer(1)]],
                   uint tid [[thread_position_in_grid]]) {
    dst[tid] = int(src[tid]);
}
"""


@pytest.fixture(scope="module")
def shim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("msl") / "shim_kernels.metal"
    path.write_text(SHIM_KERNELS)
    return path


def _bf16_round(f32: np.ndarray) -> np.ndarray:
    return torch.from_numpy(f32).to(torch.bfloat16).float().numpy()


def test_shim_constructs(shim_file):
    lib = msl_harness.compile(shim_file)
    x = np.random.default_rng(7).integers(0, 2**32, size=100, dtype=np.uint64).astype(np.uint32)
    x[:4] = [0x3F800000, 0x3F818000, 0x7F800001, 0]  # 1.0, 1.01171875 (bf16 ties to 1.015625), NaN, 0
    res = lib.dispatch_threads("shim_ops", [x, np.zeros(800, np.float32), np.uint32(100)], 100, 32)
    assert res.unwritten == {1: 0}
    got = res.buffers[1].reshape(100, 8)
    lo = (x & 0xFF).astype(np.float32)
    xf = x.view(np.float32)
    exp = np.empty((100, 8), np.float32)
    exp[:, 0] = 4.0
    exp[:, 1] = lo + (1.0 + lo + 2 + 3)
    exp[:, 2] = np.clip((x & 0xF).astype(np.int64) - 8, -4, 4)
    exp[:, 3] = np.where(x & 1, 2.0, 1.0) + np.array([bin(v).count("1") for v in x])
    with np.errstate(over="ignore"):
        exp[:, 4] = (x.astype(np.float32).astype(np.float16) * np.float16(2)).astype(np.float32)
    exp[:, 5] = _bf16_round(xf)
    exp[:, 6] = (np.array([0.5, -1.0, 2.0, 8.0], np.float32)[x & 3] * np.maximum(x >> 28, 3).astype(np.float32)
                 + np.minimum(x & 7, 5))
    exp[:, 7] = np.abs((x & 0xF).astype(np.int64) - 9) + ((x >> 4) & 0xF)
    testing.assert_bits_equal(got, exp, "shim constructs")
    assert got[1, 5] == 1.015625  # round to nearest even on the tie


def test_shim_file_lints_clean(shim_file):
    assert msl_lint.lint(shim_file) == []


def test_dispatch_threads_partial_group(shim_file):
    lib = msl_harness.compile(shim_file)
    n, group = 300, 128
    res = lib.dispatch_threads("positions", [np.zeros((n, 4), np.uint32)], n, group)
    assert res.unwritten == {0: 0}
    out = res.buffers[0].reshape(n, 4)
    tid = np.arange(n)
    np.testing.assert_array_equal(out[:, 0], tid // group)
    np.testing.assert_array_equal(out[:, 1], tid % group)
    np.testing.assert_array_equal(out[:, 2], np.where(tid < 256, group, n - 256))  # the last group is partial
    np.testing.assert_array_equal(out[:, 3], (tid % group) % 32)
    res = lib.dispatch_threads("positions_2d", [np.zeros(7 * 5, np.uint32)], (7, 5), (4, 2))
    assert res.unwritten == {0: 0}
    yy, xx = np.mgrid[0:5, 0:7]
    np.testing.assert_array_equal(res.buffers[0].reshape(5, 7), yy * 1000 + xx)


def test_unwritten_elements_are_reported(shim_file):
    lib = msl_harness.compile(shim_file)
    src = np.arange(64, dtype=np.float32)
    res = lib.dispatch_threads("skip_first", [src, np.zeros(64, np.float32)], 64, 16)
    assert res.unwritten == {1: 1}
    np.testing.assert_array_equal(res.buffers[1][1:], src[1:])


def test_ubsan_reports_undefined_behaviour(shim_file):
    lib = msl_harness.compile(shim_file, ubsan=True)
    ok = lib.dispatch_threads("to_int", [np.array([1.5, -2.5], np.float32), np.zeros(2, np.int32)], 2, 2)
    np.testing.assert_array_equal(ok.buffers[1], [1, -2])
    with pytest.raises(msl_harness.MslError, match="outside the range of representable values"):
        lib.dispatch_threads("to_int", [np.array([1.5, 3e10], np.float32), np.zeros(2, np.int32)], 2, 2)


# ---- (d) guard pages: an off-by-one kernel faults at once --------------------------------------------

_GUARD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from harness import msl_harness
    lib = msl_harness.compile(sys.argv[1])
    n = int(sys.argv[3])
    src = np.arange(n, dtype=np.float32)
    res = lib.dispatch_threads(sys.argv[2], [src, np.zeros(n, np.float32), np.uint32(n)], n + 1, 64,
                               flush=sys.argv[4])
    assert res.unwritten == {1: 0} and (res.buffers[1] == src).all()
    print("completed")
""")


@pytest.mark.parametrize("n", [1024, 1000], ids=["page-sized", "odd-sized"])
def test_guard_page_catches_off_by_one(shim_file, n):
    msl_harness.compile(shim_file)  # build in this process so the subprocess only loads the cache

    def run(kernel, flush="end"):
        return subprocess.run([sys.executable, "-c", _GUARD_SCRIPT, str(shim_file), kernel, str(n), flush],
                              capture_output=True, text=True, cwd=msl_harness.ROOT, timeout=120)

    good = run("copy_checked")
    assert good.returncode == 0 and "completed" in good.stdout, good.stderr
    bad = run("copy_off_by_one")
    assert bad.returncode != 0 and "completed" not in bad.stdout
    assert bad.returncode == -11 or "Segmentation fault" in bad.stderr, (bad.returncode, bad.stderr[-2000:])
    assert "Fatal Python error: Segmentation fault" in bad.stderr  # faulthandler names the Python frame


# ---- (e) flush-to-zero mode: what Metal fast math may do to float denormals -------------------------

FTZ_FILE = HERE / "msl_sync" / "ftz.metal"


def _f32(bits) -> np.ndarray:
    return np.array(bits, np.uint32).view(np.float32)


def test_ftz_mode_flushes_subnormal_results_and_operands():
    a = np.array([2.0**-100, -(2.0**-100), 2.0**-140, 1.5, 2.0**-140], np.float32)
    b = np.array([2.0**-30, 2.0**-30, 2.0**100, 2.0, 0.0], np.float32)
    with np.errstate(under="ignore"):
        ieee = a * b
    assert ieee[0] != 0 and ieee[2] != 0 and abs(ieee[0]) < np.finfo(np.float32).tiny  # a subnormal, a normal
    ftz = np.array([0.0, -0.0, 0.0, 3.0, 0.0], np.float32)
    for flag, want in ((False, ieee), (True, ftz)):
        lib = msl_harness.compile(FTZ_FILE, ftz=flag)
        got = lib.dispatch_threads("ftz_multiply", [a, b, np.zeros(5, np.float32)], 5, 4).buffers[2]
        testing.assert_bits_equal(got, want, f"ftz={flag} run time")
        folded = lib.dispatch_threads("ftz_folded", [np.zeros(3, np.float32)], 1, 1).buffers[0]
        testing.assert_bits_equal(folded, want[:3], f"ftz={flag} folded by the optimizer")
    # the launch restores the caller's MXCSR: numpy still computes subnormals afterwards
    with np.errstate(under="ignore"):
        assert (a * b)[0] == ieee[0] != 0
    subnormal = _f32([1])
    assert (subnormal * np.float32(2)).view(np.uint32)[0] == 2


def test_ftz_flag_reaches_the_optimizer():
    """The compile flag itself (not only MXCSR) is in effect: LLVM's denormal mode attribute."""
    prep = msl_harness.prepare(FTZ_FILE)
    for ftz in (False, True):
        flags = [*msl_harness.OCL_FLAGS, *msl_harness.COMMON_FLAGS, *(msl_harness.FTZ_FLAGS if ftz else [])]
        ir = subprocess.run([msl_harness.CLANG, *flags, f"-I{msl_harness.SHIM}", "-S", "-emit-llvm", "-o", "-",
                             "-x", "clcpp", "-"], input=msl_harness.generate(prep), capture_output=True,
                            text=True, check=True).stdout
        assert ('"denormal-fp-math"="preserve-sign,preserve-sign"' in ir) == ftz
