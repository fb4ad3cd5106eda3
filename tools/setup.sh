#!/usr/bin/env bash
# Install everything gguf-dequant's tests and benchmarks need on a fresh Debian machine, then build the
# ggml oracle and the local CPU variant. Safe to run again: each step skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

# The aarch64 C/C++ headers let clang-19 cross-compile the CPU backend for ARM64 (tests/test_cpu_cross.py).
if ! command -v clang-19 >/dev/null || ! command -v ninja >/dev/null || [ ! -e /usr/lib/llvm-19/lib/libomp.so ] \
    || [ ! -d /usr/aarch64-linux-gnu/include/c++/12 ]; then
    echo "== apt: clang-19, libomp-19-dev, ninja-build, cmake, aarch64 C/C++ headers"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq clang-19 libomp-19-dev ninja-build cmake \
        libc6-dev-arm64-cross=2.36-8cross1 libstdc++-12-dev-arm64-cross=12.2.0-14cross1 >/dev/null
fi

echo "== pip: torch 2.13.0 (CPU wheel) and the package with its test extras"
# torch is pinned in the same command so that nothing can pull a CUDA build.
python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]"

echo "== ggml oracle (libggml-base from llama-cpp-python's source distribution)"
bash tools/build_ggml.sh

echo "== llama.cpp's libllama (llama_model_quantize, for the end-to-end test; a few minutes on two cores)"
bash tools/build_llama.sh

echo "== llama.cpp's CPU library built for this CPU (GGML_NATIVE=ON; the speed comparison of benchmarks/matmul.py)"
bash tools/build_llama_native.sh

echo "== generated headers are current"
python -m gguf_dequant.tools.gen_metal --check

echo "== local CPU build of the Hub package"
python -m gguf_dequant.local_build
