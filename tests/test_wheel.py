"""The wheel carries the Metal sources: built from the project files, installed into a fresh virtual
environment, ``metal_jit.source()`` there is byte-identical to the checkout's (the run-time Metal path
needs nothing else from the repository)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gguf_dequant import metal_jit

ROOT = Path(__file__).resolve().parents[1]
# What a source distribution holds; the build must need nothing else (no .git, build/ or .cache/).
PROJECT_FILES = ["pyproject.toml", "setup.py", "README.md", "gguf_dequant", "metal"]


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(src)])
    (whl,) = dist.glob("gguf_dequant-*.whl")
    return whl


def test_wheel_ships_every_metal_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gguf_dequant/metal/{p.name}" for p in (ROOT / "metal").iterdir() if p.suffix in (".metal", ".h")}
    assert expected and expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert not any(n.startswith(("metal/", "harness/", "tests/")) for n in names), "stray top-level files"


def test_installed_wheel_assembles_the_same_source(wheel, tmp_path):
    venv = tmp_path / "venv"
    # System site-packages provide torch (not downloaded); the wheel's package shadows any other install.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)])
    out = tmp_path / "source.metal"
    script = ("import sys, gguf_dequant.metal_jit as m\n"
              "open(sys.argv[1], 'w').write(m.source())\n"
              "print(m.METAL_DIR)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = _run([str(python), "-I", "-c", script, str(out)], cwd=tmp_path, env=env)
    metal_dir = Path(proc.stdout.strip())
    assert metal_dir.is_relative_to(venv), f"the installed package read its sources from {metal_dir}"
    assert out.read_text() == metal_jit.source()
