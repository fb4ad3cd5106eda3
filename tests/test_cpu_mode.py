"""Every kernel file compiled as plain C++ (the CPU backend's mode) against the reference, bit for bit, for
each instruction set the CPU backend builds; and the shim's vector conversions against a scalar model."""

import ctypes
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gguf_dequant import reference, testing
from gguf_dequant.tools import cpu_mode

from .conftest import ALL_TYPES, DTYPE_IDS, OUT_DTYPES


def _cpu_flags() -> set[str]:
    try:
        return {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                for f in line.split(":", 1)[1].split()}
    except OSError:
        return set()


# The baseline build, and on x86-64 the AVX2 + F16C one (hardware float16 conversion, vector bf16 rounding),
# the AVX-512 one (cvtne2ps2bf16 with its subnormal fallback) that cpu/kernels_avx2.cpp and
# cpu/kernels_avx512.cpp compile, and AVX-512 without BF16 (the fused matmul's build, cpu/matmul_avx512.cpp:
# 16-wide helpers, integer bf16 rounding), where this CPU runs them.
ISAS = {"baseline": ()}
if platform.machine() in ("x86_64", "AMD64"):
    ISAS["avx2"] = ("-mavx2", "-mf16c")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _cpu_flags():
        ISAS["avx512f"] = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mf16c")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"} <= _cpu_flags():
        ISAS["avx512"] = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx2", "-mf16c")


@pytest.mark.parametrize("isa", list(ISAS))
@pytest.mark.parametrize("dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ALL_TYPES)
@given(data=st.data())
def test_cpu_mode_matches_reference(name, dtype, isa, data):
    lib = cpu_mode.compile_type(name, ISAS[isa])
    raw = data.draw(testing.hypothesis_blocks(name, max_blocks=8))
    blob = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    expected = reference.dequantize(blob, name, dtype)
    testing.assert_bits_equal(cpu_mode.run(lib, name, raw, dtype), expected, f"{name} -> {dtype}")


STORES = """
#include <metal_stdlib>
using namespace metal;
// store_values over whole 64-value chunks (every vector width of every build), then a 5-value tail.
template <typename T>
void store_all(const float *y, void *dst, long n) {
    T *out = static_cast<T *>(dst);
    long i = 0;
    for (; i + 64 <= n; i += 64) store_values<64>(out + i, y + i);
    for (; i + 5 <= n; i += 5) store_values<5>(out + i, y + i);
}
extern "C" void store_f16(const float *y, void *dst, long n) { store_all<half>(y, dst, n); }
extern "C" void store_bf16(const float *y, void *dst, long n) { store_all<bfloat>(y, dst, n); }
// lookup_nibbles<8> and <16> over 16-byte runs of q.
extern "C" void lookup(const int8_t *table, const uchar *q, unsigned shift, float d, float *y, long n) {
    for (long i = 0; i + 16 <= n; i += 16) {
        lookup_nibbles<16>(table, q + i, shift, d, y + i);
        lookup_nibbles<8>(table, q + i, shift, d, y + n + i);
        lookup_nibbles<8>(table, q + i + 8, shift, d, y + n + i + 8);
    }
}
// lookup_nibbles_both<16> and <8> over 16-byte runs of q: low then high nibbles of each run (of each 8 bytes).
extern "C" void lookup_both(const int8_t *table, const uchar *q, float d, float *y, long n) {
    for (long i = 0; i + 16 <= n; i += 16) {
        lookup_nibbles_both<16>(table, q + i, d, y + 2 * i);
        lookup_nibbles_both<8>(table, q + i, d, y + 2 * n + 2 * i);
        lookup_nibbles_both<8>(table, q + i + 8, d, y + 2 * n + 2 * i + 16);
    }
}
// scale_int8<16> and <8> over 16-byte runs of q.
extern "C" void scale(const int8_t *q, float d, float *y, long n) {
    for (long i = 0; i + 16 <= n; i += 16) {
        scale_int8<16>(q + i, d, y + i);
        scale_int8<8>(q + i, d, y + n + i);
        scale_int8<8>(q + i + 8, d, y + n + i + 8);
    }
}
// scale_nibbles<16> over 16-byte runs of q.
extern "C" void nibbles(const uchar *q, unsigned shift, int offset, float d, float *y, long n) {
    for (long i = 0; i + 16 <= n; i += 16) scale_nibbles<16>(q + i, shift, offset, d, y + i);
}
// unpack_bits<16> and <32> over 32-byte runs of q.
extern "C" void unpack(const uchar *q, unsigned shift, unsigned mask, float *y, long n) {
    for (long i = 0; i + 32 <= n; i += 32) {
        unpack_bits<16>(q + i, shift, mask, y + i);
        unpack_bits<16>(q + i + 16, shift, mask, y + i + 16);
        unpack_bits<32>(q + i, shift, mask, y + n + i);
    }
}
// widen_bytes<32> and <8> over 32-byte runs of q.
extern "C" void widen(const uchar *q, unsigned *v, long n) {
    for (long i = 0; i + 32 <= n; i += 32) {
        widen_bytes<32>(q + i, v + i);
        for (long k = 0; k < 32; k += 8) widen_bytes<8>(q + i + k, v + n + i + k);
    }
}
// grid_values for rows of 8 unsigned or signed bytes (4 rows a call) and of 4 unsigned bytes (8 rows a call).
// Sign word k covers rows [4k, 4k + 4) (width 8) or [8k, 8k + 8) (width 4).
extern "C" void grid_u8x8(const uchar (*grid)[8], const unsigned *rows, const unsigned *signs, float *y, long n_rows) {
    for (long r = 0; r + 4 <= n_rows; r += 4) grid_values<4>(grid, rows + r, signs[r / 4], y + 8 * r);
}
extern "C" void grid_i8x8(const int8_t (*grid)[8], const unsigned *rows, const unsigned *signs, float *y, long n_rows) {
    for (long r = 0; r + 4 <= n_rows; r += 4) grid_values<4>(grid, rows + r, signs[r / 4], y + 8 * r);
}
extern "C" void grid_u8x4(const uchar (*grid)[4], const unsigned *rows, const unsigned *signs, float *y, long n_rows) {
    for (long r = 0; r + 8 <= n_rows; r += 8) grid_values<8>(grid, rows + r, signs[r / 8], y + 4 * r);
}
extern "C" void load_f16(const void *src, float *y, long n) {
    for (long i = 0; i + 64 <= n; i += 64) load_values<64>(static_cast<const half *>(src) + i, y + i);
}
"""


def _f32_patterns() -> np.ndarray:
    """Every sign, exponent and top 7 significand bits (all 2^16 bfloat16 values), each with the low halves
    that decide rounding (ties, just below and above them, odd and even), shuffled so that vectors mix
    subnormals, NaNs and normal numbers."""
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x4000, 0xC000], dtype=np.uint32)
    bits = (high[:, None] | low[None, :]).reshape(-1)
    return np.random.default_rng(0).permutation(bits)


def _bf16_model(bits: np.ndarray) -> np.ndarray:
    """bf16_bits_from_f32_bits of the shim: round to nearest even; NaN keeps sign and payload, made quiet."""
    rounded = ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)


def _f16_model(bits: np.ndarray) -> np.ndarray:
    """IEEE round to nearest even (numpy); NaN: sign, quiet bit and the top 9 payload bits (F16C's rule)."""
    with np.errstate(over="ignore"):
        h = bits.view(np.float32).astype(np.float16).view(np.uint16)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((bits >> 16) & 0x8000 | 0x7E00 | (bits >> 13) & 0x3FF).astype(np.uint16), h)


@pytest.mark.parametrize("isa", list(ISAS))
def test_shim_conversions_match_scalar_model(isa):
    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    bits = _f32_patterns()
    n = bits.size - bits.size % 64 - 59  # whole 64-value chunks, then 5-value tails
    bits = np.ascontiguousarray(bits[:n])
    for fn, model in ((lib.store_bf16, _bf16_model), (lib.store_f16, _f16_model)):
        out = np.zeros(n, dtype=np.uint16)
        fn(ctypes.c_void_p(bits.ctypes.data), ctypes.c_void_p(out.ctypes.data), ctypes.c_long(n))
        want = model(bits)
        bad = np.flatnonzero(out != want)
        assert bad.size == 0, (f"{isa} {fn.__name__}: {bad.size} mismatches, e.g. f32 {bits[bad[0]]:#010x} -> "
                               f"{out[bad[0]]:#06x}, want {want[bad[0]]:#06x}")
    # Every float16 bit pattern widens exactly (NaNs stay NaNs of the same sign).
    half_bits = np.arange(1 << 16, dtype=np.uint16)
    y = np.zeros(half_bits.size, dtype=np.float32)
    lib.load_f16(ctypes.c_void_p(half_bits.ctypes.data), ctypes.c_void_p(y.ctypes.data), ctypes.c_long(y.size))
    want = half_bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(y[~nan].view(np.uint32), want[~nan].view(np.uint32)), f"{isa} load_f16"
    assert np.isnan(y[nan]).all() and np.array_equal(np.signbit(y[nan]), np.signbit(want[nan])), f"{isa} load_f16 NaN"


@pytest.mark.parametrize("isa", list(ISAS))
@pytest.mark.parametrize("table", ["kvalues_iq4nl", "kvalues_fp4"])
def test_nibble_lookup_every_byte(isa, table):
    """gguf_nibble_lookup's CPU side (a byte shuffle in the AVX2/AVX-512 builds) on every byte value, both
    nibbles, for scales that round, overflow, underflow to subnormals, and are zero, infinite or NaN."""
    from gguf_dequant import tables

    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    kv = np.ascontiguousarray(getattr(tables, table)(), dtype=np.int8)
    q = np.random.default_rng(1).permutation(np.arange(256, dtype=np.uint8))  # every byte, mixed in vectors
    n = q.size
    for shift in (0, 4):
        for d in (1.0, -0.3711, 3.0e38, 1.0e-40, 2.0 ** -140, 0.0, -0.0, np.inf, -np.inf, np.nan):
            y = np.zeros(2 * n, dtype=np.float32)
            lib.lookup(ctypes.c_void_p(kv.ctypes.data), ctypes.c_void_p(q.ctypes.data), ctypes.c_uint(shift),
                       ctypes.c_float(d), ctypes.c_void_p(y.ctypes.data), ctypes.c_long(n))
            with np.errstate(over="ignore", invalid="ignore"):
                want = kv[(q >> shift) & 0xF].astype(np.float32) * np.float32(d)
            for got, what in ((y[:n], "16"), (y[n:], "8")):
                same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
                assert same.all(), f"{isa} {table} shift {shift} d {d} lookup<{what}>: byte {q[~same][0]:#04x}"
    # gguf_nibble_lookup_both: low then high nibbles of 16 bytes (one call) or of 8 bytes (one byte shuffle).
    for d in (1.0, -0.3711, 3.0e38, 1.0e-40, 2.0 ** -140, 0.0, -0.0, np.inf, -np.inf, np.nan):
        both = np.zeros(4 * n, dtype=np.float32)
        lib.lookup_both(ctypes.c_void_p(kv.ctypes.data), ctypes.c_void_p(q.ctypes.data), ctypes.c_float(d),
                        ctypes.c_void_p(both.ctypes.data), ctypes.c_long(n))
        with np.errstate(over="ignore", invalid="ignore"):
            lo, hi = (kv[(q >> s) & 0xF].astype(np.float32) * np.float32(d) for s in (0, 4))
        for got, width in ((both[:2 * n], 16), (both[2 * n:], 8)):
            want = np.stack([lo.reshape(-1, width), hi.reshape(-1, width)], axis=1).reshape(-1)
            same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
            assert same.all(), f"{isa} {table} d {d} lookup_both<{width}>: element {np.flatnonzero(~same)[0]}"


@pytest.mark.parametrize("isa", list(ISAS))
def test_scale_int8_every_byte(isa):
    """gguf_scale_int8's CPU side (16 or 8 bytes widened per instruction) on every signed byte value, for
    scales that round, overflow, underflow to subnormals, and are zero, infinite or NaN."""
    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    q = np.random.default_rng(2).permutation(np.arange(-128, 128, dtype=np.int8))
    n = q.size
    for d in (1.0, -0.3711, 3.0e38, 1.0e-40, 2.0 ** -140, 0.0, -0.0, np.inf, -np.inf, np.nan):
        y = np.zeros(2 * n, dtype=np.float32)
        lib.scale(ctypes.c_void_p(q.ctypes.data), ctypes.c_float(d), ctypes.c_void_p(y.ctypes.data), ctypes.c_long(n))
        with np.errstate(over="ignore", invalid="ignore"):
            want = q.astype(np.float32) * np.float32(d)
        for got, what in ((y[:n], "16"), (y[n:], "8")):
            same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
            assert same.all(), f"{isa} d {d} scale_int8<{what}>: byte {q[~same][0]}"


@pytest.mark.parametrize("isa", list(ISAS))
def test_scale_nibbles_every_byte(isa):
    """gguf_scale_nibbles's CPU side on every byte value, both nibbles, the offsets in use and special scales."""
    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    q = np.random.default_rng(3).permutation(np.arange(256, dtype=np.uint8))
    for shift in (0, 4):
        for offset in (8, 0):
            for d in (1.0, -0.3711, 3.0e38, 1.0e-40, 0.0, -0.0, np.inf, np.nan):
                y = np.zeros(q.size, dtype=np.float32)
                lib.nibbles(ctypes.c_void_p(q.ctypes.data), ctypes.c_uint(shift), ctypes.c_int(offset),
                            ctypes.c_float(d), ctypes.c_void_p(y.ctypes.data), ctypes.c_long(q.size))
                with np.errstate(over="ignore", invalid="ignore"):
                    want = (((q >> shift) & 0xF).astype(np.int32) - offset).astype(np.float32) * np.float32(d)
                same = (y.view(np.uint32) == want.view(np.uint32)) | (np.isnan(y) & np.isnan(want))
                assert same.all(), f"{isa} shift {shift} offset {offset} d {d}: byte {q[~same][0]:#04x}"


@pytest.mark.parametrize("isa", list(ISAS))
def test_unpack_bits_every_byte(isa):
    """gguf_unpack_bits's CPU side (16 or 8 bytes shifted and masked per instruction) on every byte value, for
    every shift and the masks in use, including masks wider than the bits left above the shift."""
    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    q = np.concatenate([np.random.default_rng(4).permutation(np.arange(256, dtype=np.uint8)) for _ in range(2)])
    n = q.size
    for shift in range(8):
        for mask in (1, 3, 0xF, 0xFF):
            y = np.zeros(2 * n, dtype=np.float32)
            lib.unpack(ctypes.c_void_p(q.ctypes.data), ctypes.c_uint(shift), ctypes.c_uint(mask),
                       ctypes.c_void_p(y.ctypes.data), ctypes.c_long(n))
            want = ((q >> shift) & mask).astype(np.float32)
            for got, what in ((y[:n], "16"), (y[n:], "32")):
                bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
                assert bad.size == 0, f"{isa} shift {shift} mask {mask:#x} unpack<{what}>: byte {q[bad[0]]:#04x}"


@pytest.mark.parametrize("isa", list(ISAS))
def test_widen_bytes_every_byte(isa):
    """gguf_widen_bytes's CPU side (16 or 8 bytes widened per instruction) on every byte value."""
    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    q = np.concatenate([np.random.default_rng(6).permutation(np.arange(256, dtype=np.uint8)) for _ in range(2)])
    v = np.zeros(2 * q.size, dtype=np.uint32)
    lib.widen(ctypes.c_void_p(q.ctypes.data), ctypes.c_void_p(v.ctypes.data), ctypes.c_long(q.size))
    assert np.array_equal(v[:q.size], q) and np.array_equal(v[q.size:], q), isa


@pytest.mark.parametrize("isa", list(ISAS))
def test_grid_values_every_byte(isa):
    """gguf_grid_values's CPU side (rows loaded as words, widened 16 bytes at a time, signs flipped under a
    mask): tables holding every byte value, read as unsigned and as signed, rows in a shuffled order, random
    sign words, for both row widths in use (8 and 4)."""
    lib = cpu_mode.compile_source("stores", STORES, ISAS[isa])
    rng = np.random.default_rng(5)
    table = np.concatenate([rng.permutation(np.arange(256, dtype=np.uint8)) for _ in range(8)])
    for fn, width, signed in ((lib.grid_u8x8, 8, False), (lib.grid_i8x8, 8, True), (lib.grid_u8x4, 4, False)):
        grid = np.ascontiguousarray(table.view(np.int8) if signed else table).reshape(-1, width)
        rows = rng.permutation(np.arange(grid.shape[0], dtype=np.uint32))
        signs = rng.integers(0, 1 << 32, size=rows.size * width // 32, dtype=np.uint32)
        y = np.zeros(rows.size * width, dtype=np.float32)
        fn(ctypes.c_void_p(grid.ctypes.data), ctypes.c_void_p(rows.ctypes.data), ctypes.c_void_p(signs.ctypes.data),
           ctypes.c_void_p(y.ctypes.data), ctypes.c_long(rows.size))
        bit = ((signs[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int64)
        want = grid[rows].reshape(-1).astype(np.float32) * (1 - 2 * bit.reshape(-1)).astype(np.float32)
        bad = np.flatnonzero(y.view(np.uint32) != want.view(np.uint32))
        assert bad.size == 0, f"{isa} {fn.__name__}: element {bad[0]} is {y[bad[0]]}, want {want[bad[0]]}"
