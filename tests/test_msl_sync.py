"""The harness's synchronisation features (fibers per threadgroup, barriers, threadgroup memory, SIMD-group
functions, simdgroup matrices, atomics): known-answer kernels bit-exact against numpy models of the same
operation order, under forward and reverse schedules; seeded bugs that must be reported with the kernel
and file:line (tests/msl_sync_bad/)."""

import ast
import re
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_dequant import testing
from harness import msl_harness, msl_lint

pytestmark = [pytest.mark.msl,
              pytest.mark.skipif(not msl_harness.available(), reason="clang-19 is not installed")]

HERE = Path(__file__).parent
KERNELS = HERE / "msl_sync" / "sync_kernels.metal"
BAD = sorted((HERE / "msl_sync_bad").glob("*.metal"))
SCHEDULES = ["forward", "reverse"]
ORDERS = ["butterfly", "adjacent", "sequential"]


@pytest.fixture(scope="module")
def lib():
    return msl_harness.compile(KERNELS)


# ---- numpy models ------------------------------------------------------------------------------------

def reduce_model(values, active, order, op=np.add, width=32):
    """simd_sum and friends over the lanes of one segment in the harness's documented orders."""
    v, has = list(values), list(active)

    def merge(a, b):
        if has[b]:
            v[a] = op(v[a], v[b]) if has[a] else v[b]
            has[a] = True

    if order == "sequential":
        for i in range(1, width):
            merge(0, i)
    elif order == "butterfly":
        d = width // 2
        while d >= 1:
            for i in range(d):
                merge(i, i + d)
            d //= 2
    else:
        d = 1
        while d < width:
            for i in range(0, width, 2 * d):
                merge(i, i + d)
            d *= 2
    return v[0]


def f32_round(x: Fraction) -> np.float32:
    """Correct rounding of an exact rational to float32 (round half to even, subnormals)."""
    if x == 0:
        return np.float32(0.0)
    sign, x = (-1 if x < 0 else 1), abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    q = x / Fraction(2) ** (max(e, -126) - 23)   # 24 significant bits (fewer when subnormal)
    n, r = divmod(q.numerator, q.denominator)
    if 2 * r > q.denominator or (2 * r == q.denominator and n & 1):
        n += 1
    return np.float32(sign * n * 2.0 ** (max(e, -126) - 23))


def fma_model(a, b, c):
    return f32_round(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def mma_model(a, b, c, order):
    """D = A B + C for 8x8 float32 matrices in the harness's documented mma_order."""
    f = np.float32
    d = np.empty((8, 8), np.float32)
    for i in range(8):
        for j in range(8):
            p = [f(a[i, k] * b[k, j]) for k in range(8)]
            acc = c[i, j]
            if order == "fma":
                for k in range(8):
                    acc = fma_model(a[i, k], b[k, j], acc)
            elif order == "sequential":
                for k in range(8):
                    acc = f(acc + p[k])
            else:
                acc = f(acc + f(f(f(p[0] + p[1]) + f(p[2] + p[3])) + f(f(p[4] + p[5]) + f(p[6] + p[7]))))
            d[i, j] = acc
    return d


def test_sync_kernels_lint_clean():
    for path in (KERNELS, HERE / "msl_sync" / "ftz.metal", msl_harness.ROOT / "harness" / "cost.metal", *BAD):
        assert msl_lint.lint(path) == [], path.name


def test_cost_script_runs(capsys):
    from harness import cost
    assert cost.main(["--n", "256", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("s/launch") == 6 and "e-0" in out


# ---- known answers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("order", ORDERS)
def test_block_reduction_through_threadgroup_memory(lib, schedule, order):
    n, tpg = 2500, 96
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    groups = -(-n // (tpg * 4))
    res = lib.dispatch_threadgroups("block_sum", [x, np.zeros(groups, np.float32), np.uint32(n)], groups, tpg,
                                    schedule=schedule, simd_order=order)
    assert res.unwritten == {1: 0}
    want = []
    for g in range(groups):
        acc = np.zeros(tpg, np.float32)
        for t in range(tpg):
            for i in range(g * tpg * 4 + t, min(n, (g + 1) * tpg * 4), tpg):
                acc[t] = np.float32(acc[t] + x[i])
        partial = [reduce_model(acc[s * 32:(s + 1) * 32], [True] * 32, order) for s in range(tpg // 32)]
        lanes = partial + [np.float32(0)] * (32 - len(partial))
        want.append(reduce_model(lanes, [True] * 32, order))
    testing.assert_bits_equal(res.buffers[1], np.array(want, np.float32), f"block_sum {order} {schedule}")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("order", ORDERS)
def test_simd_sum_order_is_a_parameter(lib, order, schedule):
    x = np.random.default_rng(5).standard_normal(64).astype(np.float32) * np.float32(1e4)
    x[::7] *= np.float32(1e-6)
    results = {}
    for live in (32, 19):
        res = lib.dispatch_threads("simd_sum_order", [x, np.zeros(64, np.float32), np.uint32(live)], 64, 64,
                                   simd_order=order, schedule=schedule)
        for s in range(2):
            want = reduce_model(x[s * 32:(s + 1) * 32], [i < live for i in range(32)], order)
            got = res.buffers[1][s * 32:s * 32 + live]
            testing.assert_bits_equal(got, np.full(live, want, np.float32), f"simd_sum {order} live={live}")
        results[live] = res.buffers[1][0]
    models = {o: reduce_model(x[:32], [True] * 32, o) for o in ORDERS}
    assert len(set(models.values())) > 1  # the data tells the orders apart


@settings(max_examples=40)
@given(x=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=32, max_size=32),
       live=st.integers(1, 32), order=st.sampled_from(ORDERS), schedule=st.sampled_from(SCHEDULES))
def test_simd_sum_matches_the_model_of_its_order(x, live, order, schedule):
    lib = msl_harness.compile(KERNELS)
    x = np.array(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = reduce_model(x, [i < live for i in range(32)], order)
    res = lib.dispatch_threads("simd_sum_order", [x, np.zeros(32, np.float32), np.uint32(live)], 32, 32,
                               simd_order=order, schedule=schedule)
    testing.assert_bits_equal(res.buffers[1][:live], np.full(live, want, np.float32), f"{order} live={live}")


@pytest.mark.parametrize("schedule", SCHEDULES + ["random"])
def test_group_prefix_sum(lib, schedule):
    n, tpg = 200, 96  # the last group has 8 threads (one partial simdgroup)
    x = np.random.default_rng(4).integers(0, 1000, n).astype(np.uint32)
    res = lib.dispatch_threads("group_scan", [x, np.zeros(2 * n, np.uint32)], n, tpg, schedule=schedule, seed=7)
    assert res.unwritten == {1: 0}
    want = np.concatenate([np.cumsum(x[g:g + tpg]) for g in range(0, n, tpg)]).astype(np.uint32)
    np.testing.assert_array_equal(res.buffers[1][0::2], want)
    np.testing.assert_array_equal(res.buffers[1][1::2], want)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_transpose_through_threadgroup_memory(lib, schedule):
    w, h = 24, 16
    a = np.arange(w * h, dtype=np.float32).reshape(h, w)
    res = lib.dispatch_threadgroups("transpose_tile", [a, np.zeros(w * h, np.float32), np.array([w, h], np.uint32)],
                                    (w // 8, h // 8), (8, 8), schedule=schedule)
    assert res.unwritten == {1: 0}
    np.testing.assert_array_equal(res.buffers[1].reshape(w, h), a.T)


def _lane_map():
    """Element (row, col) of each lane's thread_elements(), as documented in msl_sync.h (MLX's layout)."""
    rows = [(lane // 4 & 4) + (lane // 2 % 4) for lane in range(32)]
    cols = [(lane // 4 & 2) * 2 + (lane % 2) * 2 for lane in range(32)]
    return rows, cols


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("mma_order", ["fma", "sequential", "pairwise"])
def test_simdgroup_matrix_multiply(lib, mma_order, schedule):
    count = 4  # matrices; 2 simdgroups per group
    rng = np.random.default_rng(6)
    a = rng.standard_normal((count, 8, 8)).astype(np.float32)
    b = rng.standard_normal((count, 8, 8)).astype(np.float16)
    c = rng.standard_normal((count, 8, 8)).astype(np.float32)
    bt = np.ascontiguousarray(b.transpose(0, 2, 1))  # stored transposed; the kernel loads it with transpose
    res = lib.dispatch_threadgroups("mma8", [a, bt, c, np.zeros(count * 64, np.float32),
                                             np.zeros(count * 64, np.float32)], count // 2, 64,
                                    schedule=schedule, mma_order=mma_order)
    assert res.unwritten == {3: 0, 4: 0}
    owned = res.buffers[4].reshape(count, 32, 2)
    rows, cols = _lane_map()
    for lane in range(32):
        np.testing.assert_array_equal(owned[:, lane], a[:, rows[lane], cols[lane]:cols[lane] + 2])
    bf = b.astype(np.float32)
    want = np.stack([mma_model(a[m], bf[m], c[m], mma_order) for m in range(count)])
    testing.assert_bits_equal(res.buffers[3].reshape(count, 8, 8), want, f"mma {mma_order}")
    err = np.abs(want.astype(np.float64) - (a.astype(np.float64) @ bf.astype(np.float64) + c))
    assert err.max() < 1e-5 * (np.abs(a) @ np.abs(bf) + np.abs(c)).max()


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (finite values)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("mma_order", ["fma", "pairwise"])
def test_simdgroup_multiply_bfloat_and_diagonal(lib, mma_order, schedule):
    rng = np.random.default_rng(10)
    a, b = _bf16(rng.standard_normal((8, 8))), _bf16(rng.standard_normal((8, 8)))
    res = lib.dispatch_threads("mm8_bfloat", [a, b, np.zeros(64, np.float32), np.zeros(64, np.float32)], 32, 32,
                               mma_order=mma_order, schedule=schedule)
    af = (a.astype(np.uint32) << 16).view(np.float32).reshape(8, 8)
    bf = (b.astype(np.uint32) << 16).view(np.float32).reshape(8, 8)
    np.testing.assert_array_equal(res.buffers[2].reshape(8, 8), 2 * af)
    want = mma_model(af, bf, np.zeros((8, 8), np.float32), mma_order)
    testing.assert_bits_equal(res.buffers[3].reshape(8, 8), want, f"bfloat mma {mma_order}")


def test_device_atomics():
    lib = msl_harness.compile(KERNELS)
    x = np.random.default_rng(11).integers(-1000, 1000, 100).astype(np.int32)
    ints = np.array([10**6, -10**6, -1, 0, 0, 0, 5, -7], np.int32)
    res = lib.dispatch_threads("atomic_ops", [x, ints, np.zeros(1, np.float32)], 100, 32, inout=[1, 2])
    got = res.buffers[1].view(np.int32)
    want = [x.min(), x.max(), np.bitwise_and.reduce(x | 0x100), np.bitwise_or.reduce(x & 0xF0),
            np.bitwise_xor.reduce(x), -100, 5 + x.sum(), x[3]]
    np.testing.assert_array_equal(got, want)
    total = np.float32(0)
    for v in x:  # thread order
        total = np.float32(total + np.float32(np.float32(v) * np.float32(0.1)))
    testing.assert_bits_equal(res.buffers[2].view(np.float32), np.array([total], np.float32), "atomic float sum")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_atomics_histogram(lib, schedule):
    n = 1000
    x = np.random.default_rng(8).integers(0, 256, n).astype(np.uint8)
    start = np.arange(16, dtype=np.uint32) * 1000
    res = lib.dispatch_threads("histogram", [x, start, np.uint32(n)], n, 128, schedule=schedule, inout=[1])
    np.testing.assert_array_equal(res.buffers[1].view(np.uint32), start + np.bincount(x & 15, minlength=16))


def _battery_model(v, live):
    lanes = range(live)
    vv = [int(t) for t in v]
    m32 = 0xFFFFFFFF
    out = np.zeros((32, 32), np.uint64)
    total = sum(vv[:live]) & m32
    prod = 1
    for t in vv[:live]:
        prod = prod * (t | 1) & m32
    pre_sum, pre_prod = np.cumsum(vv[:live]), []
    acc = 1
    for t in vv[:live]:
        acc = acc * (t | 1) & m32
        pre_prod.append(acc)
    first = 0
    ballot = sum(1 << i for i in lanes if vv[i] & 1)
    for i in lanes:
        o = out[i]
        o[0], o[1] = total, prod
        o[2], o[3] = min(vv[:live]), max(vv[:live])
        o[4] = o[5] = o[6] = vv[0]
        for t in vv[1:live]:
            o[4], o[5], o[6] = int(o[4]) & t, int(o[5]) | t, int(o[6]) ^ t
        o[7] = pre_sum[i] & m32
        o[8] = (pre_sum[i] - vv[i]) & m32
        o[9] = pre_prod[i]
        o[10] = pre_prod[i - 1] if i else 1
        o[11] = vv[live - 1 - i]
        o[12] = vv[i ^ 1]
        o[13] = vv[i - 3] if i >= 3 else vv[i]
        if live == 32:
            o[14] = vv[i + 5] if i + 5 < 32 else vv[i]
            o[15] = vv[(i - 7) % 32]
            o[16] = vv[(i + 9) % 32]
            o[18] = vv[i + 3] if i + 3 < 32 else vv[i + 3 - 32] + 1000
            k = i % 8
            o[19] = vv[i - 1] if k >= 1 else vv[i + 7] + 1000
            o[20] = vv[i + 2] if k + 2 < 8 else vv[i + 2 - 8] + 1000
        o[17] = vv[i - 2] if i >= 2 else vv[30 + i] + 1000
        o[21] = vv[2]
        o[22] = vv[first]
        o[23] = ballot
        o[24] = int(all(t < 1000 for t in vv[:live]))
        o[25] = int(any(t & 7 == 0 for t in vv[:live]))
        o[26] = int(i == first)
        q = i // 4 * 4
        quad = [j for j in range(q, q + 4) if j < live]
        o[27] = sum(vv[j] for j in quad)
        o[28] = vv[q + ((i % 4) ^ 2)]
        o[29] = vv[q + 3]
        o[30] = sum(vv[j] for j in quad if j < i)
        o[31] = sum(1 << j for j in lanes)
    return out.astype(np.uint32)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("live", [32, 28])
def test_every_simd_function(lib, live, schedule):
    v = np.random.default_rng(live).integers(0, 2000, 32).astype(np.uint32)
    v[5] = 8  # simd_any((v & 7) == 0) is true
    res = lib.dispatch_threads("simd_battery", [v, np.zeros(32 * 32, np.uint32), np.uint32(live)], 32, 32,
                               schedule=schedule)
    got = res.buffers[1].reshape(32, 32)[:live]
    want = _battery_model(v, live)[:live]
    if live < 32:  # these would read lanes that returned: the kernel skips them
        got[:, 14:21] = want[:, 14:21] = 0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fibers", [False, True], ids=["serial", "fibers"])
@pytest.mark.parametrize("grid,group", [((5, 3, 2), (2, 2, 2)), ((7, 4, 3), (4, 3, 3)), ((70, 1, 1), (64, 1, 1))])
def test_thread_positions_3d(lib, grid, group, fibers):
    gx, gy, gz = grid
    res = lib.dispatch_threads("positions_3d", [np.zeros(gx * gy * gz * 20, np.uint32)], grid, group,
                               fibers=fibers, schedule="reverse")
    assert res.unwritten == {0: 0}
    out = res.buffers[0].reshape(gz, gy, gx, 20)
    ngroups = [-(-g // t) for g, t in zip(grid, group)]
    for z in range(gz):
        for y in range(gy):
            for x in range(gx):
                p = (x, y, z)
                tg = [p[d] // group[d] for d in range(3)]
                tt = [p[d] % group[d] for d in range(3)]
                tsz = [min(group[d], grid[d] - tg[d] * group[d]) for d in range(3)]
                tidx = tt[0] + tsz[0] * (tt[1] + tsz[1] * tt[2])
                count = tsz[0] * tsz[1] * tsz[2]
                want = [*p, *tg, *tt, *tsz, ngroups[0] * 10000 + ngroups[1] * 100 + ngroups[2],
                        gx * 10000 + gy * 100 + gz, tidx, tidx // 32, tidx % 32, 32, -(-count // 32), 7]
                np.testing.assert_array_equal(out[z, y, x], want, err_msg=f"thread {p}")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_threadgroup_parameter_sized_by_the_launch(lib, schedule):
    x = np.random.default_rng(9).integers(-50, 50, 512).astype(np.float32)
    res = lib.dispatch_threads("dynamic_tg_sum", [x, np.zeros(4, np.float32)], 512, 128,
                               threadgroup_buffers={0: 128 * 4}, schedule=schedule)
    np.testing.assert_array_equal(res.buffers[1], x.reshape(4, 128).sum(axis=1))
    with pytest.raises(msl_harness.MslError, match=r"kernel dynamic_tg_sum \(.*sync_kernels.metal:\d+\): "
                                                   r"threadgroup_buffers binds indices \[\], .* are \[0\]"):
        lib.dispatch_threads("dynamic_tg_sum", [x, np.zeros(4, np.float32)], 512, 128)
    with pytest.raises(msl_harness.MslError, match="multiple of 16"):
        lib.dispatch_threads("dynamic_tg_sum", [x, np.zeros(4, np.float32)], 512, 128, threadgroup_buffers={0: 100})
    with pytest.raises(msl_harness.MslError, match="out of bounds"):  # sized for a smaller group
        lib.dispatch_threads("dynamic_tg_sum", [x, np.zeros(4, np.float32)], 512, 128, threadgroup_buffers={0: 256})


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_threadgroup_memory_is_poisoned_at_each_group_start(lib, schedule):
    res = lib.dispatch_threads("read_poison", [np.zeros(96, np.uint32)], 96, 32, schedule=schedule)
    assert (res.buffers[0] == 0xFFFFFFFF).all()
    res = lib.dispatch_threads("read_poison", [np.zeros(96, np.uint32)], 96, 32, poison=0x5A, schedule=schedule)
    assert (res.buffers[0] == 0x5A5A5A5A).all()


def test_device_out_of_bounds_in_a_fiber_names_the_line(lib):
    with pytest.raises(msl_harness.MslError) as e:
        lib.dispatch_threads("device_oob", [np.zeros(64, np.float32)], 64, 32)
    line = next(i for i, t in enumerate(KERNELS.read_text().splitlines(), 1) if "out[gid + 64] = s;" in t)
    assert re.search(rf"kernel device_oob \(.*\): threadgroup \(0,0,0\): thread 0: out-of-bounds access: "
                     rf"invalid address .* at {re.escape(str(KERNELS))}:{line}", str(e.value)), str(e.value)


def test_random_schedule_is_seeded(lib):
    x = np.arange(200, dtype=np.uint32)
    runs = [lib.dispatch_threads("group_scan", [x, np.zeros(400, np.uint32)], 200, 96, schedule="random",
                                 seed=s).buffers[1] for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])  # a correct kernel does not depend on the schedule
    with pytest.raises(ValueError, match="schedule="):
        lib.dispatch_threads("group_scan", [x, np.zeros(400, np.uint32)], 200, 96, schedule="backwards")


def test_plain_kernels_take_the_serial_path(lib):
    dequant = msl_harness.compile(msl_harness.kernel_file("Q4_0"))
    raw = testing.random_blocks("Q4_0", 64, np.random.default_rng(0)).tobytes()
    msl_harness.dequantize("Q4_0", raw)
    assert not dequant._synchronising
    args = [np.ones(32, np.float32), np.zeros(32, np.float32), np.uint32(32)]
    with pytest.raises(msl_harness.MslError, match="synchronises, which the serial mode cannot run"):
        lib.dispatch_threads("simd_sum_order", args, 32, 32, fibers=False)
    lib.dispatch_threads("simd_sum_order", args, 32, 32)
    assert "simd_sum_order" in lib._synchronising


def test_fiber_path_matches_the_serial_path_on_dequant_kernels():
    lib = msl_harness.compile(msl_harness.kernel_file("Q4_K"))
    raw = np.frombuffer(testing.random_blocks("Q4_K", 20, np.random.default_rng(2), finite=False).tobytes(), np.uint8)
    n = 20 * 256
    runs = [lib.dispatch_threads("dequantize_q4_k_f16", [raw, np.zeros(n, np.float16), np.uint64(n)], n // 32, 64,
                                 fibers=f, schedule="reverse").buffers[1] for f in (False, True)]
    assert runs[0].tobytes() == runs[1].tobytes()


# ---- seeded bugs ---------------------------------------------------------------------------------------

def _header(path: Path, key: str) -> str:
    return re.search(rf"^//\s*{key}:\s*(.*)$", path.read_text(), re.M).group(1).strip()


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_seeded_bug_is_reported(path, schedule):
    launch = ast.literal_eval(_header(path, "launch"))
    groups, group = launch.pop("groups"), launch.pop("group")
    bug_line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "// BUG" in t)
    bad = msl_harness.compile(path)
    start = time.monotonic()
    with pytest.raises(msl_harness.MslError) as e:
        bad.dispatch_threadgroups("bad", [np.zeros(groups * group, np.float32)], groups, group, schedule=schedule,
                                  **launch)
    message = str(e.value)
    assert time.monotonic() - start < 5
    assert message.startswith(f"kernel bad ({path.resolve()}:"), message
    assert f"{path.resolve()}:{bug_line}" in message, message
    assert re.search(_header(path, "expect"), message), message


def test_function_constants():
    base = msl_harness.compile(KERNELS).dispatch_threads("specialised", [np.zeros(4, np.float32)], 4, 4)
    np.testing.assert_array_equal(base.buffers[0], [100, 101, 102, 103])  # none defined
    spec = msl_harness.compile(KERNELS, function_constants={0: True, 1: 0.5, 2: -3})
    res = spec.dispatch_threads("specialised", [np.zeros(4, np.float32)], 4, 4)
    np.testing.assert_array_equal(res.buffers[0], [-3, -2.5, -2, -1.5])


def test_group_over_1024_threads_and_unchecked_builds(lib):
    with pytest.raises(msl_harness.MslError, match=r"kernel block_sum \(.*\): a threadgroup of 1056x1x1 = 1056 "
                                                   r"threads exceeds Metal's limit of 1024"):
        lib.dispatch_threadgroups("block_sum", [np.zeros(8, np.float32), np.zeros(1, np.float32), np.uint32(8)],
                                  1, 1056)
    fast = msl_harness.compile(KERNELS, race_check=False)
    assert not fast.manifest["sites"] and lib.manifest["sites"]
    x = np.arange(300, dtype=np.float32)
    got = fast.dispatch_threadgroups("block_sum", [x, np.zeros(1, np.float32), np.uint32(300)], 1, 96)
    assert got.buffers[1][0] == x.sum()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_race_check_follows_barrier_scope(lib, schedule):
    def run(mode):
        return lib.dispatch_threads("exchange", [np.zeros(64, np.uint32), np.uint32(mode)], 64, 64,
                                    schedule=schedule).buffers[0]

    tid = np.arange(64)
    np.testing.assert_array_equal(run(0), (tid ^ 1) * 10)
    np.testing.assert_array_equal(run(3), (tid ^ 32) * 10)
    for mode in (1, 2):
        with pytest.raises(msl_harness.MslError, match=r"data race on threadgroup memory 'slots'"):
            run(mode)


def test_ubsan_build_runs_fibers():
    ub = msl_harness.compile(KERNELS, ubsan=True)
    x = np.arange(200, dtype=np.uint32)
    res = ub.dispatch_threads("group_scan", [x, np.zeros(400, np.uint32)], 200, 96, schedule="reverse")
    np.testing.assert_array_equal(res.buffers[1][0::2], np.concatenate([np.cumsum(x[:96]), np.cumsum(x[96:192]),
                                                                        np.cumsum(x[192:])]))


def test_fiber_stack_overflow_is_reported(lib):
    with pytest.raises(msl_harness.MslError, match=r"kernel stack_hog .* stack overflow") as e:
        lib.dispatch_threads("stack_hog", [np.zeros(32, np.float32)], 32, 32, fibers=True)
    assert re.search(r"stack overflow .* at \S+:\d+$", str(e.value)), str(e.value)  # symbolised


def test_kernel_attribute_caps_the_group_and_constant_index_expressions():
    spec = msl_harness.compile(KERNELS, function_constants={601: 5})
    np.testing.assert_array_equal(spec.dispatch_threads("capped", [np.zeros(64, np.uint32)], 64, 64).buffers[0],
                                  np.arange(64) + 5)
    with pytest.raises(msl_harness.MslError, match=r"128 threads exceeds the kernel's "
                                                   r"\[\[max_total_threads_per_threadgroup\]\] of 64"):
        spec.dispatch_threads("capped", [np.zeros(128, np.uint32)], 128, 128)


def test_uninitialized_threadgroup_reads_on_request(lib):
    with pytest.raises(msl_harness.MslError, match=r"thread 0 reads byte offset 0 of threadgroup memory 'tile' "
                                                   r"\(.*\) at .*sync_kernels.metal:\d+, which no thread of the "
                                                   r"group has written"):
        lib.dispatch_threads("read_poison", [np.zeros(96, np.uint32)], 96, 32, check_uninitialized=True)
    x = np.arange(200, dtype=np.uint32)  # a correct kernel passes
    lib.dispatch_threads("group_scan", [x, np.zeros(400, np.uint32)], 200, 96, check_uninitialized=True)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_structs_through_threadgroup_memory(lib, schedule):
    src = np.random.default_rng(12).integers(0, 256, 32 * 32).astype(np.uint8)
    res = lib.dispatch_threads("struct_stage", [src, np.zeros(32 * 32, np.uint8), np.uint32(1)], 32, 32,
                               schedule=schedule)
    np.testing.assert_array_equal(res.buffers[1].reshape(32, 32), src.reshape(32, 32)[::-1])
    with pytest.raises(msl_harness.MslError, match="data race on threadgroup memory 'blocks'"):  # copies are checked
        lib.dispatch_threads("struct_stage", [src, np.zeros(32 * 32, np.uint8), np.uint32(0)], 32, 32,
                             schedule=schedule)
