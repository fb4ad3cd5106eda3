"""An ASan + UBSan build of the CPU backend runs the hypothesis parity fuzz cleanly (in a subprocess)."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gguf_dequant import local_build

from .test_matvec_tier import AMX, TIER

ROOT = Path(__file__).resolve().parents[1]
# One build root per checkout: worktrees share .cache, and two checkouts' builds must not replace each other's.
SANITIZE_ROOT = ROOT / ".cache" / "sanitize" / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]


def _runtime(name: str) -> str:
    cxx = os.environ.get("CXX", "c++")
    path = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"{cxx} has no {name}")
    return path


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")
def test_sanitized_cpu_backend_runs_the_fuzz_cleanly(tmp_path):
    preload = f"{_runtime('libasan.so')} {_runtime('libubsan.so')}"
    variant = local_build.build(ROOT, extra_flags=FLAGS, out_root=SANITIZE_ROOT, quiet=True)
    [so] = variant.glob("*.so")
    symbols = subprocess.run(["nm", "-D", str(so)], capture_output=True, text=True, check=True).stdout
    assert "__asan_report" in symbols and "__ubsan_handle" in symbols, "the library is not instrumented"
    # The sanitizer reports go to files: inside pytest's fd capture a report written to stderr is lost when the
    # sanitizer ends the process (exit status 1 and nothing else).
    logs = tmp_path / "report"
    env = dict(os.environ, GGUF_DEQUANT_BUILD_DIR=str(SANITIZE_ROOT), LD_PRELOAD=preload,
               ASAN_OPTIONS=f"detect_leaks=0:abort_on_error=1:log_path={logs}",
               UBSAN_OPTIONS=f"print_stacktrace=1:log_path={logs}",
               GGUF_HYPOTHESIS_EXAMPLES=os.environ.get("GGUF_HYPOTHESIS_EXAMPLES", "30"))
    # Every byte value of every type through the SIMD tiers this CPU has (the fuzz samples types at random).
    tiers = (["tests/test_matvec_tier.py::test_every_byte_value"] if TIER else []) + (
        ["tests/test_amx_tier.py::test_bound_every_tier_size"] if AMX else [])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hub_package.py",
         "tests/test_matmul.py", *tiers, "-k", "parity or misaligned or out_parameter or get_rows or concurrent "
         "or legacy or earlier or fuzz or empty or BadInput or mul_mat_id or every_byte_value or every_tier_size"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    reports = "".join(f.read_text()[:4000] for f in sorted(tmp_path.glob("report*")))
    output = proc.stdout + proc.stderr
    assert not reports, reports
    assert proc.returncode == 0, output[-5000:]
    assert "AddressSanitizer" not in output and "runtime error" not in output, output[-5000:]
    assert " passed" in output and "skipped" not in output.splitlines()[-1], output[-2000:]
