"""Helpers shared by the test suites and benchmarks: NaN-aware bit comparison and block generators
(development tooling, not shipped in the wheel; what the run-time package needs is in ``gguf_dequant.blocks``).

Floats are compared bit for bit: two values agree when their bit patterns are equal or both are NaN.
Blocks come from hypothesis (random bytes with scale fields forced to special values) or from numpy
generators (random and finite-scale bytes) for the benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch

from .blocks import (SCALE_FIELDS, bits_mismatch, finite_scales, isnan_np,  # noqa: F401 - the tests' names
                     random_blocks, to_numpy_bits)
from .types import resolve

# Special half-precision scale values as bit patterns: +-0, smallest subnormal, a larger subnormal, the
# smallest normal, 1, -2.5, 8190, 8200, the largest finite value, +-inf, NaN (formats.md, oracles.md section 6).
SPECIAL_HALF_BITS = (
    0x0000, 0x8000, 0x0001, 0x0032, 0x0400, 0x1114, 0x3C00, 0xC100, 0x6FFF, 0x7001,
    0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01,
)
SPECIAL_E8M0 = (0, 1, 2, 126, 127, 128, 254, 255)
SPECIAL_UE4M3 = (0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0x7F, 0x80, 0xFF)


def assert_bits_equal(actual, expected, what: str = "") -> None:
    """Assert bit-for-bit equality, NaN-aware; on failure report the first differing elements."""
    bad = bits_mismatch(actual, expected)
    if bad.any():
        idx = np.argwhere(bad)[:5]
        a = actual.detach().cpu().float().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
        e = expected.detach().cpu().float().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
        shown = ", ".join(f"{tuple(i)}: {a[tuple(i)]!r} != {e[tuple(i)]!r}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ; first: {shown}")


def round_to(ref_f32, dtype: torch.dtype) -> torch.Tensor:
    """The float32 reference rounded once (to nearest even) to ``dtype``: what every backend must return."""
    t = torch.as_tensor(ref_f32)
    assert t.dtype == torch.float32
    return t.to(dtype)


def set_scale(block: bytearray, offset: int, kind: str, value: int) -> None:
    """Write a raw scale bit pattern ``value`` into one block."""
    if kind == "f16":
        block[offset:offset + 2] = int(value & 0xFFFF).to_bytes(2, "little")
    elif kind in ("e8m0", "ue4m3"):
        block[offset] = value & 0xFF
    elif kind == "iq1m":
        for k in range(4):  # word k carries bits 4k..4k+3 of d in its top nibble
            hi = offset + 2 * k + 1
            block[hi] = (block[hi] & 0x0F) | (((value >> (4 * k)) & 0xF) << 4)
    else:
        raise ValueError(kind)


def hypothesis_blocks(qtype, max_blocks: int = 8, min_blocks: int = 0):
    """Hypothesis strategy: bytes of ``n`` whole blocks, some scale fields forced to special values."""
    from hypothesis import strategies as st

    t = resolve(qtype)
    fields = SCALE_FIELDS[t.name]

    @st.composite
    def build(draw):
        n = draw(st.integers(min_blocks, max_blocks))
        data = bytearray(draw(st.binary(min_size=n * t.block_bytes, max_size=n * t.block_bytes)))
        if n and fields:
            for _ in range(draw(st.integers(0, 2 * n))):
                blk = draw(st.integers(0, n - 1))
                offset, kind = draw(st.sampled_from(fields))
                specials = {"f16": SPECIAL_HALF_BITS, "iq1m": SPECIAL_HALF_BITS,
                            "e8m0": SPECIAL_E8M0, "ue4m3": SPECIAL_UE4M3}[kind]
                value = draw(st.sampled_from(specials))
                block = bytearray(data[blk * t.block_bytes:(blk + 1) * t.block_bytes])
                set_scale(block, offset, kind, value)
                data[blk * t.block_bytes:(blk + 1) * t.block_bytes] = block
        return bytes(data)

    return build()


# ---- the factored form of the Metal mat-vec tier (launch.MV_FACTORED) ------------------------------------

def _halves(blocks: np.ndarray, offset: int) -> np.ndarray:
    return blocks[:, offset:offset + 2].copy().view(np.float16)[:, 0].astype(np.float32)


def factored_codes(name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, a, o), each float32 (N, K): every element's code and its run's scale and offset (w = a q + o),
    from the raw bytes by the formats' definitions (gguf_dequant.reference's field helpers)."""
    with np.errstate(invalid="ignore", over="ignore"):  # infinite or NaN half scales, as the formats allow
        return _factored_codes(name, raw)


def _factored_codes(name, raw):
    t = resolve(name)
    name = t.name
    n = raw.shape[0]
    blocks = raw.reshape(-1, t.block_bytes)
    if name == "Q4_0":
        qs = blocks[:, 2:18].astype(np.int32)
        q = 16 * (np.concatenate([qs & 0xF, qs >> 4], axis=1) - 8)  # the kernel's codes: 16 (nibble - 8), d / 16
        a, o = np.broadcast_to(_halves(blocks, 0)[:, None] / 16, q.shape), np.zeros(q.shape, np.float32)
    elif name == "MXFP4":  # E8M0 scales 0, 1 (subnormal): codes times 2^-64, scale 2^(e - 64), as the kernel
        from .tables import kvalues_fp4

        e = blocks[:, 0].astype(np.int64)
        qs = blocks[:, 1:17].astype(np.int32)
        small = (e < 2)[:, None]
        q = np.asarray(kvalues_fp4(), np.float32)[np.concatenate([qs & 0xF, qs >> 4], axis=1)]
        q = np.where(small, q * np.float32(2.0 ** -64), q)
        scale = np.where(e < 2, 2.0 ** (e.astype(np.float64) - 64), 2.0 ** (e.astype(np.float64) - 128))
        a, o = np.broadcast_to(scale.astype(np.float32)[:, None], q.shape), np.zeros(q.shape, np.float32)
    elif name == "Q8_0":
        q = blocks[:, 2:34].copy().view(np.int8).astype(np.int32)
        a, o = np.broadcast_to(_halves(blocks, 0)[:, None], q.shape), np.zeros(q.shape, np.float32)
    elif name in ("Q4_K", "Q5_K"):
        from .reference.q4_k import scale_min_k4

        sc, m = (v.numpy().astype(np.float32) for v in scale_min_k4(torch.from_numpy(blocks[:, 4:16].astype(np.int32))))
        start = 16 if name == "Q4_K" else 48
        qs = blocks[:, start:start + 128].astype(np.int32).reshape(-1, 4, 1, 32)
        q = ((qs >> np.array([0, 4]).reshape(1, 1, 2, 1)) & 0xF).reshape(-1, 8, 32)
        if name == "Q5_K":  # bit j of qh[l] is bit 4 of element l of sub-block j
            q = q | (((blocks[:, None, 16:48].astype(np.int32) >> np.arange(8).reshape(1, 8, 1)) & 1) << 4)
        a = np.broadcast_to((_halves(blocks, 0)[:, None] * sc)[:, :, None], q.shape)
        o = np.broadcast_to((-(_halves(blocks, 2)[:, None] * m))[:, :, None], q.shape)
    elif name == "Q6_K":  # element 128h + 32k + l: nibble k // 2 of ql[64h + 32(k % 2) + l], bits 2k of qh[32h + l]
        ql = blocks[:, 0:128].astype(np.int32).reshape(-1, 2, 1, 2, 32)
        low = (ql >> (4 * np.arange(2)).reshape(1, 1, 2, 1, 1)) & 0xF  # (n, h, k // 2, k % 2, l)
        qh = blocks[:, 128:192].astype(np.int32).reshape(-1, 2, 1, 32)
        high = (qh >> (2 * np.arange(4)).reshape(1, 1, 4, 1)) & 3     # (n, h, k, l)
        q = (low.reshape(-1, 2, 4, 32) | (high << 4)) - 32
        scales = blocks[:, 192:208].copy().view(np.int8).astype(np.float32)
        a = np.broadcast_to((_halves(blocks, 208)[:, None] * scales)[:, :, None], (len(blocks), 16, 16))
        o = np.zeros(q.shape, np.float32)
    elif name == "IQ4_XS":
        from .tables import kvalues_iq4nl

        qs = blocks[:, 8:136].astype(np.int32).reshape(-1, 8, 1, 16)
        q = np.asarray(kvalues_iq4nl(), np.int32)[(qs >> np.array([0, 4]).reshape(1, 1, 2, 1)) & 0xF].reshape(-1, 8, 32)
        g = np.arange(8)
        scales_h = blocks[:, 2].astype(np.int32) | (blocks[:, 3].astype(np.int32) << 8)
        ls = ((blocks[:, 4 + g // 2].astype(np.int32) >> (4 * (g % 2))) & 0xF) | (((scales_h[:, None] >> (2 * g)) & 3) << 4)
        a = np.broadcast_to((_halves(blocks, 0)[:, None] * (ls - 32).astype(np.float32))[:, :, None], q.shape)
        o = np.zeros(q.shape, np.float32)
    elif name in ("IQ2_XXS", "IQ3_XXS"):  # a u32 per group: 4 x 7 sign-index bits, ls in bits 28..31
        from .tables import grid, ksigns_iq2xs

        if name == "IQ2_XXS":  # group g: 4 grid-index bytes (rows of 8), then its u32
            groups = blocks[:, 2:66].reshape(-1, 8, 8)
            rows, sw = groups[:, :, 0:4], groups[:, :, 4:8].copy().view("<u4")[:, :, 0]
        else:  # 64 grid-index bytes (8 rows of 4 per group), then the 8 u32
            rows, sw = blocks[:, 2:66].reshape(-1, 8, 8), blocks[:, 66:98].copy().view("<u4")
        sw = sw.astype(np.int64)
        values = grid(name.lower().replace("_", "")[:-3] + "xxs")[rows.astype(np.int64)].reshape(-1, 8, 4, 8)
        signs = ksigns_iq2xs()[(sw[:, :, None] >> (7 * np.arange(4))) & 127]           # (n, g, l)
        negative = (signs[..., None].astype(np.int64) >> np.arange(8)) & 1             # (n, g, l, j)
        q = (values * (1 - 2 * negative)).reshape(-1, 8, 32)
        half = np.float32(0.25 if name == "IQ2_XXS" else 0.5)
        db = _halves(blocks, 0)[:, None] * (np.float32(0.5) + (sw >> 28).astype(np.float32)) * half
        a = np.broadcast_to(db[:, :, None], q.shape)
        o = np.zeros(q.shape, np.float32)
    elif name == "IQ2_XS":  # u16 per 8 elements: grid row (9 bits), sign index (7); a scale nibble per 16
        from .tables import grid, ksigns_iq2xs

        w = blocks[:, 2:66].copy().view("<u2").astype(np.int64)                       # (n, 32)
        negative = (ksigns_iq2xs()[w >> 9][..., None].astype(np.int64) >> np.arange(8)) & 1
        q = (grid("iq2xs")[w & 511] * (1 - 2 * negative)).reshape(-1, 16, 16)
        nib = (blocks[:, 66:74, None].astype(np.int64) >> np.array([0, 4])) & 0xF       # (n, g, half)
        db = _halves(blocks, 0)[:, None] * (np.float32(0.5) + nib.reshape(-1, 16).astype(np.float32)) * np.float32(0.25)
        a = np.broadcast_to(db[:, :, None], q.shape)
        o = np.zeros(q.shape, np.float32)
    elif name in ("IQ2_S", "IQ3_S"):  # a grid row per index, a sign byte per 8 elements
        from .tables import grid

        g, half = np.arange(8), _halves(blocks, 0)[:, None]
        if name == "IQ2_S":  # 32 index bytes (+ 2 bits each from qh), 32 sign bytes; a scale nibble per 16
            qh = blocks[:, 66:74, None].astype(np.int64) >> (2 * np.arange(4))          # (n, g, l)
            rows = blocks[:, 2:34].reshape(-1, 8, 4).astype(np.int64) | ((qh & 3) << 8)
            sign_bytes = blocks[:, 34:66]
            nib = (blocks[:, 74:82, None].astype(np.int64) >> np.array([0, 4])) & 0xF
            db = np.repeat(half * (np.float32(0.5) + nib.reshape(-1, 16).astype(np.float32)) * np.float32(0.25), 2, axis=1)
        else:  # 64 index bytes (+ 1 bit each from qh), 32 sign bytes; a scale nibble per group
            qh = blocks[:, 66:74, None].astype(np.int64) >> np.arange(8)
            rows = blocks[:, 2:66].reshape(-1, 8, 8).astype(np.int64) | ((qh & 1) << 8)
            sign_bytes = blocks[:, 74:106]
            nib = (blocks[:, 106 + g // 2].astype(np.int64) >> (4 * (g % 2))) & 0xF
            db = np.repeat(half * (1 + 2 * nib).astype(np.float32), 4, axis=1)
        values = grid(name.lower().replace("_", ""))[rows].reshape(-1, 32, 8)          # (n, sub-group, j)
        negative = (sign_bytes[..., None].astype(np.int64) >> np.arange(8)) & 1
        q = (values * (1 - 2 * negative)).reshape(-1, 32, 8)
        a = np.broadcast_to(db[:, :, None], q.shape)
        o = np.zeros(q.shape, np.float32)
    elif name in ("IQ1_S", "IQ1_M"):  # q = 8 (grid + delta), a = dl / 8
        from .tables import grid

        if name == "IQ1_S":  # group g: h = qh[g]; row l: qs[4g + l] | ((h >> 3l) & 7) << 8; k = (h >> 12) & 7
            h = blocks[:, 34:50].copy().view("<u2").astype(np.int64)                 # (n, g)
            rows = blocks[:, 2:34].reshape(-1, 8, 4).astype(np.int64) | (((h[:, :, None] >> (3 * np.arange(4))) & 7) << 8)
            negative = np.broadcast_to((h[:, :, None] >> 15) & 1, rows.shape)
            k = np.repeat((h >> 12) & 7, 2, axis=1)                                   # per 16 elements
            d = _halves(blocks, 0)[:, None]
        else:  # row l of group g: nibble l % 2 of qh[2g + l / 2]; k: 3 bits of sc[g / 2] per 16 elements
            nib = ((blocks[:, 32:48, None].astype(np.int64) >> np.array([0, 4])) & 0xF).reshape(-1, 8, 4)
            rows = blocks[:, 0:32].reshape(-1, 8, 4).astype(np.int64) | ((nib & 7) << 8)
            negative = nib >> 3
            sc = blocks[:, 48:56].copy().view("<u2").astype(np.int64)                # (n, 4)
            bits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
            d = bits.astype(np.uint16).view(np.float16).astype(np.float32)[:, None]
            g = np.arange(8)
            k = ((sc[:, g // 2, None] >> (6 * (g % 2)[:, None] + 3 * np.arange(2))) & 7).reshape(-1, 16)
        q = (8 * grid("iq1s")[rows] + (1 - 2 * negative)[..., None]).reshape(-1, 16, 16)
        a = np.broadcast_to(((d * (2 * k + 1).astype(np.float32)) * np.float32(0.125))[:, :, None], q.shape)
        o = np.zeros(q.shape, np.float32)
    elif name in ("Q4_1", "Q5_0", "Q5_1", "IQ4_NL"):  # element j < 16: low nibble of qs[j], j + 16: high nibble
        start = {"Q4_1": 4, "Q5_0": 6, "Q5_1": 8, "IQ4_NL": 2}[name]
        qs = blocks[:, start:start + 16].astype(np.int32)
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1)
        if name in ("Q5_0", "Q5_1"):  # bit j of the little-endian qh: element j's fifth bit
            qh = blocks[:, start - 4:start].copy().view("<u4").astype(np.int64)
            q = q | (((qh >> np.arange(32)) & 1) << 4).astype(np.int32)
        if name == "IQ4_NL":
            from .tables import kvalues_iq4nl

            q = np.asarray(kvalues_iq4nl(), np.int32)[q]
        q = q - 16 if name == "Q5_0" else q
        a = np.broadcast_to(_halves(blocks, 0)[:, None], q.shape)
        o = (np.broadcast_to(_halves(blocks, 2)[:, None], q.shape) if name in ("Q4_1", "Q5_1")
             else np.zeros(q.shape, np.float32))
    elif name in ("Q1_0", "Q2_0", "TQ2_0"):  # bits per element, LSB first (TQ2_0: as Q2_K's low bits); d
        bits = {"Q1_0": 1, "Q2_0": 2, "TQ2_0": 2}[name]
        if name == "TQ2_0":
            qs = blocks[:, 0:64].astype(np.int32).reshape(-1, 2, 1, 32)
            codes = (qs >> (2 * np.arange(4)).reshape(1, 1, 4, 1)) & 3
        else:
            qs = blocks[:, 2:18].astype(np.int32)
            codes = (qs[:, :, None] >> (bits * np.arange(8 // bits))) & ((1 << bits) - 1)
        q = codes.reshape(len(blocks), -1)
        q = 1 - 2 * q if name == "Q1_0" else q - 1  # Q1_0: the kernel's -1 for a set bit, with a = -d
        a = np.broadcast_to(_halves(blocks, 64 if name == "TQ2_0" else 0)[:, None], q.shape)
        a = -a if name == "Q1_0" else a
        o = np.zeros(q.shape, np.float32)
    elif name == "TQ1_0":
        from .reference.tq1_0 import digit_table

        b = blocks[:, 0:52].astype(np.int64)
        off = 256 * np.arange(5).reshape(1, 5, 1)
        idx = np.concatenate([(b[:, None, 0:32] + off).reshape(-1, 160), (b[:, None, 32:48] + off).reshape(-1, 80),
                              (b[:, None, 48:52] + off[:, 0:4]).reshape(-1, 16)], axis=1)
        q = digit_table()[idx]
        a, o = np.broadcast_to(_halves(blocks, 52)[:, None], q.shape), np.zeros(q.shape, np.float32)
    elif name == "NVFP4":  # sub-block s: low nibbles of qs[8s ..] -> 16s + 0..7, high -> 16s + 8..15
        from .reference.nvfp4 import ue4m3_values
        from .tables import kvalues_fp4

        qs = blocks[:, 4:36].astype(np.int32).reshape(-1, 4, 1, 8)
        q = np.asarray(kvalues_fp4(), np.float32)[(qs >> np.array([0, 4]).reshape(1, 1, 2, 1)) & 0xF].reshape(-1, 4, 16)
        a = np.broadcast_to(ue4m3_values()[blocks[:, 0:4]][:, :, None], q.shape)
        o = np.zeros(q.shape, np.float32)
    elif name in ("Q2_K", "Q3_K"):  # element 128h + 32g + l: bits 2g of qs[32h + l]; sub-block e / 16
        start = 16 if name == "Q2_K" else 32
        qs = blocks[:, start:start + 64].astype(np.int32).reshape(-1, 2, 1, 32)
        q = (qs >> (2 * np.arange(4)).reshape(1, 1, 4, 1)) & 3  # (n, h, g, l)
        i = np.arange(16)
        if name == "Q2_K":
            sc = blocks[:, 0:16].astype(np.int32)
            a = _halves(blocks, 80)[:, None] * (sc & 0xF).astype(np.float32)
            o = -(_halves(blocks, 82)[:, None] * (sc >> 4).astype(np.float32))
        else:  # high bit: bit 4h + g of hmask[l]; q = low2 + 4 high - 4; scales stored + 32
            high = (blocks[:, None, None, 0:32].astype(np.int32) >> (4 * np.arange(2).reshape(1, 2, 1, 1)
                                                                      + np.arange(4).reshape(1, 1, 4, 1))) & 1
            q = q + 4 * high - 4
            s = blocks[:, 96:108].astype(np.int32)
            lo = np.where(i < 8, s[:, i % 8] & 0xF, s[:, i % 8] >> 4)
            sc = lo | (((s[:, 8 + i % 4] >> (2 * (i // 4))) & 3) << 4)
            a = _halves(blocks, 108)[:, None] * (sc - 32).astype(np.float32)
            o = np.zeros(a.shape, np.float32)
        a, o = (np.broadcast_to(v[:, :, None], (len(blocks), 16, 16)) for v in (a, o))
    else:
        raise KeyError(name)
    return tuple(np.ascontiguousarray(v, np.float32).reshape(n, -1) for v in (q, a, o))
