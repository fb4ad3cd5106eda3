"""Properties of the Metal sources that the Linux harness cannot see by compiling them."""

import re
from pathlib import Path

import pytest

from gguf_dequant import metal_jit

ROOT = Path(__file__).resolve().parents[1]
METAL_FILES = sorted(p for p in (ROOT / "metal").rglob("*") if p.is_file())


@pytest.mark.parametrize("path", METAL_FILES, ids=lambda p: p.name)
def test_metal_file_is_ascii(path):
    """torch.mps.compile_shader hands the source to Metal as an ASCII string: one non-ASCII byte (a
    typographic quote or a Greek letter in a comment) fails the run-time build on every Mac."""
    data = path.read_bytes()
    bad = [(data[:i].count(b"\n") + 1, hex(b)) for i, b in enumerate(data) if b > 0x7F]
    assert not bad, f"{path.name}: non-ASCII bytes at (line, byte) {bad[:5]}"


def test_runtime_source_is_ascii():
    metal_jit.source().encode("ascii")


def test_ieee_pragma_is_guarded():
    """The math-mode pragma reaches Apple's compiler only where MSL has it (3.2+) and never the C++ builds."""
    common = (ROOT / "metal" / "gguf_common.h").read_text()
    m = re.search(r"#if ([^\n]*)\n#pragma METAL fp math_mode\(safe\)\n#endif", common)
    assert m, "gguf_common.h: no guarded `#pragma METAL fp math_mode(safe)`"
    assert "__METAL_VERSION__ >= 320" in m.group(1) and "!defined(GGUF_CPU)" in m.group(1)
    assert metal_jit.source().count("#pragma METAL fp math_mode(safe)") == 1
