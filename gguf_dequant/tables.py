"""Lookup tables of the non-linear and grid-based types, generated from gguf-py's own data.

Nothing here is typed by hand: grids come from ``gguf.quants.<CLS>.init_grid()``, value tables from the
classes' ``kvalues``. The reference uses these arrays directly; ``gguf_dequant.tools.gen_metal`` writes
them into ``metal/gguf_tables.h`` for the Metal and CPU kernels, and tests compare both with ggml.
"""

from __future__ import annotations

import functools

import numpy as np
from gguf import quants


def _grid_values(cls) -> np.ndarray:
    """The grid of an IQ class as (rows, width) small integers (e.g. values 8/25/43 for IQ2_XXS)."""
    cls.init_grid()
    rows, width = cls.grid_shape
    values = cls.grid.reshape(rows, width)
    ints = values.astype(np.int32)
    assert np.array_equal(ints, values), f"{cls.__name__} grid has non-integer values"
    return ints


@functools.cache
def grid(name: str) -> np.ndarray:
    """IQ grid by ggml table name: iq2xxs, iq2xs, iq2s, iq3xxs, iq3s, iq1s -> int32 array (rows, width)."""
    cls = {
        "iq2xxs": quants.IQ2_XXS, "iq2xs": quants.IQ2_XS, "iq2s": quants.IQ2_S,
        "iq3xxs": quants.IQ3_XXS, "iq3s": quants.IQ3_S, "iq1s": quants.IQ1_S,
    }[name]
    return _grid_values(cls)


@functools.cache
def ksigns_iq2xs() -> np.ndarray:
    """128 sign bytes: low 7 bits = index, bit 7 = parity (so every byte has an even number of set bits)."""
    table = np.frombuffer(quants.IQ2_XXS.ksigns, dtype=np.uint8).copy()
    idx = np.arange(128)
    parity = np.array([bin(i).count("1") & 1 for i in idx])
    assert np.array_equal(table, idx | (parity << 7)), "gguf-py ksigns disagree with the parity rule"
    return table


@functools.cache
def kvalues_iq4nl() -> np.ndarray:
    return np.array(quants.IQ4_NL.kvalues, dtype=np.int32)


@functools.cache
def kvalues_fp4() -> np.ndarray:
    """E2M1 values doubled, shared by MXFP4 and NVFP4."""
    mx = np.array(quants.MXFP4.kvalues, dtype=np.int32)
    assert np.array_equal(mx, np.array(quants.NVFP4.kvalues, dtype=np.int32))
    return mx


IQ1S_DELTA = float(quants.IQ1_S.delta)
assert IQ1S_DELTA == float(quants.IQ1_M.delta) == 0.125
