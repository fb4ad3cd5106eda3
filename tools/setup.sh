#!/usr/bin/env bash
# Install everything gguf-dequant's tests and benchmarks need on a fresh machine, then build the ggml oracle and
# the local CPU variant. Safe to run again: each step skips what is already in place.
#
# Debian (Linux): clang-19 and friends from apt (the Metal shader harness, the ARM64 cross-compile check).
# macOS: what a Mac has (Xcode's command line tools; cmake and ninja from Homebrew when missing); the Linux-only
# steps are skipped (the shader harness needs clang-19: its tests skip on a Mac, where the MPS tests run instead).
# GGUF_SETUP_DRY_RUN=1 prints the steps instead of running them (tests/test_setup.py checks both branches).
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    if [ "${GGUF_SETUP_DRY_RUN:-0}" = "1" ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

case "$(uname -s)" in
Linux)
    # The aarch64 C/C++ headers let clang-19 cross-compile the CPU backend for ARM64 (tests/test_cpu_cross.py).
    if ! command -v clang-19 >/dev/null || ! command -v ninja >/dev/null || [ ! -e /usr/lib/llvm-19/lib/libomp.so ] \
        || [ ! -d /usr/aarch64-linux-gnu/include/c++/12 ]; then
        echo "== apt: clang-19, libomp-19-dev, ninja-build, cmake, aarch64 C/C++ headers"
        export DEBIAN_FRONTEND=noninteractive
        run apt-get update -qq
        run apt-get install -y -qq clang-19 libomp-19-dev ninja-build cmake \
            libc6-dev-arm64-cross=2.36-8cross1 libstdc++-12-dev-arm64-cross=12.2.0-14cross1
    fi
    ;;
Darwin)
    echo "== macOS: Xcode's command line tools, cmake and ninja (Homebrew)"
    if ! xcrun --find clang++ >/dev/null 2>&1; then
        echo "setup: Xcode's command line tools are missing: run 'xcode-select --install', then this script again" >&2
        exit 1
    fi
    missing=()
    for tool in cmake ninja; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if ! command -v brew >/dev/null; then
            echo "setup: ${missing[*]} not found and Homebrew is not installed: install them, then run this again" >&2
            exit 1
        fi
        run brew install "${missing[@]}"
    fi
    echo "== the Metal shader harness needs clang-19 (Linux): its tests skip here; the MPS tests run instead"
    ;;
*)
    echo "setup: unsupported system $(uname -s) (Debian Linux or macOS)" >&2
    exit 1
    ;;
esac

echo "== pip: torch 2.13.0 and the package with its test extras"
# torch is pinned in the same command so that nothing can pull another build (on Linux, a CUDA one).
run python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]"

echo "== ggml oracle (libggml-base from llama-cpp-python's source distribution)"
run bash tools/build_ggml.sh

echo "== llama.cpp's libllama (llama_model_quantize, for the end-to-end test; a few minutes on two cores)"
run bash tools/build_llama.sh

if [ "$(uname -s)" = Linux ]; then
    echo "== llama.cpp's CPU library built for this CPU (GGML_NATIVE=ON; the speed comparison of benchmarks/matmul.py)"
    run bash tools/build_llama_native.sh
fi

echo "== generated headers are current"
run python -m gguf_dequant.tools.gen_metal --check

echo "== local CPU build of the Hub package"
run python -m gguf_dequant.local_build
