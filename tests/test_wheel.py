"""The wheel: built from the project files and installed into a fresh virtual environment, it carries the Metal
sources (``metal_jit.source()`` there is byte-identical to the checkout's) and what runs for users, and nothing of
the development tooling (test helpers, oracles, generators): every shipped module imports and the package works
(dequantize, linear, the backend self-check, the command line) without them.

The test's environment sees the running interpreter's packages (torch is not downloaded) through a ``.pth`` file
listing the running environment's site-packages directories as plain paths, so it works the same whether the suite
runs in the base interpreter or inside a virtual environment (where ``--system-site-packages`` would show the base
interpreter's packages instead of the environment's own torch). Plain paths also keep the checkout's editable
install (a ``.pth`` import hook) out: the installed wheel is the only ``gguf_dequant`` there.
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from gguf_dequant import backends, metal_jit

ROOT = Path(__file__).resolve().parents[1]
# What a source distribution holds; the build must need nothing else (no .git, build/ or .cache/).
PROJECT_FILES = ["pyproject.toml", "setup.py", "README.md", "gguf_dequant", "metal"]
# Development tooling that stays in the checkout (setup.py).
DEVELOPMENT_MODULES = ("gguf_dequant.testing", "gguf_dequant.oracles", "gguf_dequant.tools")


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


def _running_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory):
    """A fresh virtual environment with the wheel installed; the running environment's packages on a .pth."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    Path(purelib, "running_environment.pth").write_text("\n".join(_running_site_dirs()) + "\n")
    _run([str(python), "-I", "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)])
    return python


def _run_in(python, script, *args, cwd, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", backends.ENV_BACKEND)}
    env.update(extra_env or {})
    return _run([str(python), "-I", "-c", script, *map(str, args)], cwd=cwd, env=env)


def test_wheel_ships_every_metal_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gguf_dequant/metal/{p.name}" for p in (ROOT / "metal").iterdir() if p.suffix in (".metal", ".h")}
    assert expected and expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert not any(n.startswith(("metal/", "harness/", "tests/")) for n in names), "stray top-level files"


def test_wheel_ships_what_runs_and_no_development_tooling(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dev_paths = tuple(m.replace(".", "/") for m in DEVELOPMENT_MODULES)
    assert not [n for n in names if n.startswith(dev_paths)], "development tooling in the wheel"
    runtime = {f"gguf_dequant/{p.relative_to(ROOT / 'gguf_dequant')}" for p in (ROOT / "gguf_dequant").rglob("*.py")
               if not str(p.relative_to(ROOT)).replace(os.sep, "/").startswith(dev_paths)}
    assert runtime <= names, f"run-time modules missing from the wheel: {sorted(runtime - names)}"


def test_installed_wheel_assembles_the_same_source(venv_python, tmp_path):
    out = tmp_path / "source.metal"
    script = ("import sys, gguf_dequant.metal_jit as m\n"
              "open(sys.argv[1], 'w').write(m.source())\n"
              "print(m.METAL_DIR)\n")
    proc = _run_in(venv_python, script, out, cwd=tmp_path)
    metal_dir = Path(proc.stdout.strip())
    assert metal_dir.is_relative_to(venv_python.parents[1]), f"the installed package read its sources from {metal_dir}"
    assert out.read_text() == metal_jit.source()


# Runs inside the wheel's environment: every shipped module imports, the development modules are absent, and the
# package works: dequantize and linear for every type against float64 sums of the decoded values, the backend
# choice (with the self-check when a kernel build is given) and `gguf-dequant bench` on its random blocks.
STANDALONE = r"""
import importlib, importlib.util, json, pkgutil, subprocess, sys
import numpy as np, torch
import gguf_dequant
from gguf_dequant import backends

dev = json.loads(sys.argv[1])
assert all(importlib.util.find_spec(m) is None for m in dev), [m for m in dev if importlib.util.find_spec(m)]
shipped = [m.name for m in pkgutil.walk_packages(gguf_dequant.__path__, "gguf_dequant.")
           if m.name != "gguf_dequant.__main__"]  # runs the command line (below)
for name in shipped:
    importlib.import_module(name)
rng = np.random.default_rng(0)
from gguf_dequant.blocks import random_blocks
for t in gguf_dequant.SUPPORTED.values():  # random_blocks makes every scale finite: the values are finite
    k = max(t.block_elems, 64)
    raw = torch.from_numpy(random_blocks(t, 4 * k // t.block_elems, rng).reshape(4, -1))
    w = gguf_dequant.dequantize(raw, t.name, torch.float32)
    assert torch.equal(w, gguf_dequant.reference.dequantize(raw, t.name, torch.float32)), t.name
    x = torch.randn(3, k)
    err = (gguf_dequant.linear(x, raw, t.name).double() - x.double() @ w.double().T).abs()
    assert (err <= (k + 1) * 2.0**-24 * 1.0001 * (x.double().abs() @ w.double().abs().T)).all(), t.name
name, why = gguf_dequant.explain("cpu", "q4_k")
bench = subprocess.run([sys.executable, "-I", "-m", "gguf_dequant", "bench", "--elements", "256", "--repeat", "1",
                        "--types", "Q4_K,IQ2_XXS", "--no-chart"], capture_output=True, text=True)
assert bench.returncode == 0, bench.stderr
assert "| Q4_K |" in bench.stdout and "| IQ2_XXS |" in bench.stdout, bench.stdout
loaded = sorted(m for m in sys.modules if m.startswith(tuple(dev)))
print(json.dumps({"torch": torch.__file__, "backend": name, "why": why, "shipped": shipped, "loaded_dev": loaded,
                  "verified": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in backends._verified.items()}}))
"""


def test_installed_wheel_works_without_development_tooling(venv_python, tmp_path):
    import json

    from tests.hub import _load

    extra = {}
    kernel, _ = _load()
    if kernel is not None:  # the checkout's CPU build: the installed package loads it and self-checks each type
        extra[backends.ENV_BUILD_DIR] = str(Path(os.environ.get(backends.ENV_BUILD_DIR, ROOT / "build")))
    proc = _run_in(venv_python, STANDALONE, json.dumps(DEVELOPMENT_MODULES), cwd=tmp_path, extra_env=extra)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded_dev"] == []
    assert report["torch"] == torch.__file__, "the wheel's environment runs another torch than the suite's"
    assert "gguf_dequant.integrations.transformers" in report["shipped"]
    if kernel is not None:
        assert report["backend"] == "kernel", report["why"]
        assert report["verified"] and all(v is None for v in report["verified"].values()), report["verified"]
    else:
        assert report["backend"] == "reference"
