"""The GGML type table: the one source of truth for ids, names and block geometry.

Every GGML type id 0..42 is known here. The 28 storage types that can be dequantized are
``SUPPORTED``; every other id is refused by :func:`resolve` with a message that names it and says why.
The C++/Metal side gets its copy of this table generated from here (``gguf_dequant.tools.gen_metal``),
and a test proves the copies agree.
"""

from __future__ import annotations

import enum
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class QuantType:
    """A dequantizable GGML storage type: ``block_elems`` elements are stored in ``block_bytes`` bytes."""

    id: int
    name: str
    block_elems: int
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.block_bytes / self.block_elems

    def __int__(self) -> int:
        return self.id


# id, name, elements per block, bytes per block (ggml's type_traits; formats.md section 2).
_SUPPORTED_ROWS = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
]

SUPPORTED: dict[int, QuantType] = {row[0]: QuantType(*row) for row in _SUPPORTED_ROWS}

# The types whose float32 values can be subnormal: F32 and BF16 hold any float, and MXFP4's E8M0 scale goes
# down to 2^-127. Every other type's nonzero values are at least 2^-27 (float16 or UE4M3 scales, at least
# 2^-24 and 2^-9, times integers and the formats' fractions of at least 1/8), so their bfloat16 stores skip
# the subnormal check (tests/test_types.py proves it on special scales).
SUBNORMAL_OUTPUTS = frozenset({"F32", "BF16", "MXFP4"})
BY_NAME: dict[str, QuantType] = {t.name: t for t in SUPPORTED.values()}

# Ids that exist in ggml but are not dequantization targets, with the reason given to the caller.
_REFUSED: dict[int, str] = {
    4: "Q4_2 was removed from ggml",
    5: "Q4_3 was removed from ggml",
    9: "Q8_1 is an intermediate activation format, never stored in GGUF files",
    15: "Q8_K is an intermediate activation format, never stored in GGUF files",
    24: "I8 is an integer type, not a quantized float",
    25: "I16 is an integer type, not a quantized float",
    26: "I32 is an integer type, not a quantized float",
    27: "I64 is an integer type, not a quantized float",
    28: "F64 is not a dequantization target (no float64 output)",
    31: "Q4_0_4_4 was removed from GGUF files (use Q4_0 with runtime repacking)",
    32: "Q4_0_4_8 was removed from GGUF files (use Q4_0 with runtime repacking)",
    33: "Q4_0_8_8 was removed from GGUF files (use Q4_0 with runtime repacking)",
    36: "IQ4_NL_4_4 was removed from ggml (forks reuse id 36 for other formats)",
    37: "IQ4_NL_4_8 was removed from ggml",
    38: "IQ4_NL_8_8 was removed from ggml",
}
_REFUSED_NAMES = {
    "Q4_2": 4, "Q4_3": 5, "Q8_1": 9, "Q8_K": 15, "I8": 24, "I16": 25, "I32": 26, "I64": 27,
    "F64": 28, "Q4_0_4_4": 31, "Q4_0_4_8": 32, "Q4_0_8_8": 33, "IQ4_NL_4_4": 36,
    "IQ4_NL_4_8": 37, "IQ4_NL_8_8": 38,
}
GGML_TYPE_COUNT = 43
assert set(SUPPORTED) | set(_REFUSED) == set(range(GGML_TYPE_COUNT))


class UnsupportedTypeError(ValueError):
    """The requested GGML type cannot be dequantized (removed, non-storage, integer or unknown id)."""


def resolve(qtype) -> QuantType:
    """Turn an int id, a case-insensitive name, a ``gguf.GGMLQuantizationType`` or a QuantType into a QuantType."""
    if isinstance(qtype, QuantType):
        return qtype
    if isinstance(qtype, str):
        key = qtype.strip().upper()
        if key.startswith("GGML_TYPE_"):
            key = key[len("GGML_TYPE_"):]
        if key in BY_NAME:
            return BY_NAME[key]
        if key in _REFUSED_NAMES:
            type_id = _REFUSED_NAMES[key]
            raise UnsupportedTypeError(f"GGML type {qtype!r} (id {type_id}) cannot be dequantized: {_REFUSED[type_id]}")
        raise UnsupportedTypeError(
            f"unknown GGML type name {qtype!r}; supported: {', '.join(sorted(BY_NAME))}")
    if isinstance(qtype, bool) or not isinstance(qtype, (numbers.Integral, enum.Enum)):
        raise TypeError(f"GGML type must be an int id, a name or a GGMLQuantizationType, got {type(qtype).__name__}")
    type_id = int(qtype.value if isinstance(qtype, enum.Enum) else qtype)
    if type_id in SUPPORTED:
        return SUPPORTED[type_id]
    if type_id in _REFUSED:
        raise UnsupportedTypeError(f"GGML type id {type_id} cannot be dequantized: {_REFUSED[type_id]}")
    raise UnsupportedTypeError(
        f"unknown GGML type id {type_id}: ggml defines ids 0..{GGML_TYPE_COUNT - 1} "
        "(forks reuse ids such as 36, 42 and 43 for their own formats; refusing rather than guessing)")


FLOAT_TYPES = ("F32", "F16", "BF16")  # share metal/float.metal


def kernel_file_name(qtype) -> str:
    """The kernel file of a type in metal/: float.metal for the float types, <lower-case name>.metal for the rest."""
    t = resolve(qtype)
    return "float.metal" if t.name in FLOAT_TYPES else f"{t.name.lower()}.metal"


def kernel_files() -> list[str]:
    """Every kernel file once, in registry order."""
    return list(dict.fromkeys(kernel_file_name(t) for t in SUPPORTED.values()))
