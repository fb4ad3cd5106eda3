"""tools/setup.sh's platform branches, as far as Linux can check them: the script runs with a stand-in
``uname`` (and stand-in Xcode and Homebrew commands) in dry-run mode (GGUF_SETUP_DRY_RUN=1 prints each step
instead of running it). On macOS it must use what a Mac has, never apt-get, and skip the Linux-only steps;
the ARM64 compile of the CPU backend is tests/test_cpu_cross.py."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from gguf_dequant import local_build

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")


def _stand_ins(tmp_path: Path, system: str, tools: dict[str, str]) -> Path:
    """A bin directory with only the commands the script may reach: `uname -s` says ``system``; ``tools``
    maps other command names to their shell bodies; `dirname` is the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    for name, body in {"uname": f'echo "{system}"', **tools}.items():
        path = bin_dir / name
        path.write_text(f"#!{BASH}\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def _run(bin_dir: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir), "GGUF_SETUP_DRY_RUN": "1", "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([BASH, str(ROOT / "tools" / "setup.sh")], env=env, capture_output=True, text=True)


def test_macos_uses_xcode_and_homebrew_and_skips_linux_steps(tmp_path):
    bin_dir = _stand_ins(tmp_path, "Darwin", {"xcrun": "exit 0", "brew": "exit 0"})
    proc = _run(bin_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "would run: brew install cmake ninja" in out  # neither is on this PATH
    assert "apt" not in out and "clang-19 and" not in out
    assert "the Metal shader harness needs clang-19" in out
    steps = [line.removeprefix("would run: ") for line in out.splitlines() if line.startswith("would run: ")]
    assert steps == ["brew install cmake ninja",
                     'python -m pip install -q --disable-pip-version-check torch==2.13.0 -e .[test]',
                     "bash tools/build_ggml.sh", "bash tools/build_llama.sh",
                     "python -m gguf_dequant.tools.gen_metal --check", "python -m gguf_dequant.local_build"]


def test_macos_with_cmake_and_ninja_needs_no_homebrew(tmp_path):
    present = {"xcrun": "exit 0", "cmake": "exit 0", "ninja": "exit 0"}
    proc = _run(_stand_ins(tmp_path, "Darwin", present))
    assert proc.returncode == 0, proc.stderr
    assert "would run: brew" not in proc.stdout


@pytest.mark.parametrize("tools, message", [({}, "xcode-select --install"),
                                            ({"xcrun": "exit 0"}, "Homebrew is not installed")])
def test_macos_says_what_is_missing(tmp_path, tools, message):
    proc = _run(_stand_ins(tmp_path, "Darwin", {"xcrun": "exit 1", **tools}))
    assert proc.returncode == 1 and message in proc.stderr


def test_linux_installs_from_apt_when_clang_19_is_missing(tmp_path):
    proc = _run(_stand_ins(tmp_path, "Linux", {}))
    assert proc.returncode == 0, proc.stderr
    assert "would run: apt-get install -y -qq clang-19 libomp-19-dev ninja-build cmake" in proc.stdout
    assert "brew" not in proc.stdout and "xcrun" not in proc.stdout


def test_unsupported_system_is_refused(tmp_path):
    proc = _run(_stand_ins(tmp_path, "FreeBSD", {}))
    assert proc.returncode == 1 and "unsupported system FreeBSD" in proc.stderr


def test_local_build_flags_per_platform(monkeypatch):
    """Xcode's clang has neither -fno-gnu-unique nor -fopenmp; an extension resolves Python at load time."""
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert local_build._platform_compile_flags() == []
    assert local_build._platform_link_flags() == ["-undefined", "dynamic_lookup"]
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert "-fopenmp" in local_build._platform_compile_flags() and "-fno-gnu-unique" in local_build._platform_compile_flags()
