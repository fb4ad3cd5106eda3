"""The CPU backend's sources cross-compile for ARM64 (Apple silicon, Graviton): the __fp16 conversions and
the baseline kernels, with the torch headers, exactly as build.toml lists them, so that a Mac or ARM Linux
CPU variant is not a first build on a user's machine. Compile-only: there is no ARM machine here.

Needs clang-19 and Debian's aarch64 C/C++ headers (libc6-dev-arm64-cross, libstdc++-12-dev-arm64-cross;
tools/setup.sh installs them). Skipped without them unless GGUF_REQUIRE_CROSS=1 (CI sets it).
"""

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = "aarch64-linux-gnu"
SYSROOT_HEADERS = Path("/usr") / TARGET / "include"


def _cross_compiler() -> str:
    cxx = shutil.which("clang++-19")
    why = None
    if cxx is None:
        why = "clang++-19 not found"
    elif not (SYSROOT_HEADERS / "stdint.h").exists() or not (SYSROOT_HEADERS / "c++").is_dir():
        why = f"no {TARGET} C/C++ headers in {SYSROOT_HEADERS} (apt-get install libc6-dev-arm64-cross libstdc++-12-dev-arm64-cross)"
    if why:
        if os.environ.get("GGUF_REQUIRE_CROSS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return cxx


def _cpu_build() -> tuple[list[Path], list[str]]:
    """(translation units, flags) of the CPU kernel as build.toml states them."""
    config = tomllib.loads((ROOT / "build.toml").read_text())
    [kernel] = [k for k in config["kernel"].values() if k["backend"] == "cpu"]
    units = [ROOT / s for s in kernel["src"] if s.endswith(".cpp")]
    includes = [ROOT / d for d in kernel["include"]]
    return units, [f"-I{d}" for d in includes] + kernel.get("cxx-flags", [])


def test_cpu_sources_cross_compile_for_arm64(tmp_path):
    from torch.utils import cpp_extension

    cxx = _cross_compiler()
    units, flags = _cpu_build()
    torch_includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    base = [cxx, f"--target={TARGET}", "-std=c++20", "-O2", "-Werror", "-Wno-unused-command-line-argument",
            "-DCPU_KERNEL", *flags, *torch_includes]
    assert any(u.name == "kernels_generic.cpp" for u in units)
    for unit in units:
        obj = tmp_path / (unit.stem + ".o")
        # The kernels are compiled to code (instruction selection too); the rest is checked for syntax.
        mode = ["-c", "-o", str(obj)] if unit.name == "kernels_generic.cpp" else ["-fsyntax-only"]
        proc = subprocess.run([*base, *mode, str(unit)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{unit.name} for {TARGET}:\n{proc.stderr[-4000:]}"

    # The float16 conversions use the hardware (__fp16: fcvt/fcvtn), not the portable bit-twiddling fallback.
    objdump = shutil.which("llvm-objdump-19") or shutil.which("llvm-objdump")
    if objdump is None:
        pytest.skip("llvm-objdump not found: compiled, conversions not inspected")
    text = subprocess.run([objdump, "-d", str(tmp_path / "kernels_generic.o")], capture_output=True, text=True,
                          check=True).stdout
    assert "fcvtn" in text or "fcvt\th" in text, "no hardware float16 conversion in the ARM64 kernels"
