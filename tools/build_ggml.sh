#!/usr/bin/env bash
# Build ggml's base library (libggml-base: type traits, to_float, ggml_quantize_chunk) from the
# llama-cpp-python source distribution and install it into <repo>/.cache/ggml/lib/, where the ctypes
# oracle (gguf_dequant/oracles/ggml.py) finds it. Only the ggml-base target is built (about 10 s on two
# cores); see oracles.md section 2.2.
#
# Environment:
#   GGML_SDIST     path to an already downloaded llama_cpp_python-<version>.tar.gz (skips the download)
#   GGML_CACHE     working directory (default <repo>/.cache/ggml)
#   PYTHON         interpreter whose pip downloads the sdist (default: python3)
#   GGML_FORCE=1   rebuild even if the library is already installed
#
# Idempotent: does nothing when <cache>/lib/libggml-base.so exists.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/llama_cpp_common.sh"  # LLAMA_CPP_PYTHON_VERSION, GGML_CACHE, TOP, SO
CACHE="$GGML_CACHE"
LIBDIR="$CACHE/lib"
PYTHON="${PYTHON:-python3}"

if [ -e "$LIBDIR/libggml-base.$SO" ] && [ "${GGML_FORCE:-0}" != "1" ]; then
    echo "build_ggml: $LIBDIR/libggml-base.$SO already exists, nothing to do (GGML_FORCE=1 rebuilds)"
    exit 0
fi

mkdir -p "$CACHE"

# 1. The source distribution.
if [ -n "${GGML_SDIST:-}" ]; then
    if [ ! -f "$GGML_SDIST" ]; then
        echo "build_ggml: GGML_SDIST=$GGML_SDIST does not exist" >&2
        exit 1
    fi
    SDIST="$GGML_SDIST"
    echo "build_ggml: using source distribution $SDIST"
else
    SDIST="$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    if [ ! -f "$SDIST" ]; then
        echo "build_ggml: downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (source distribution, ~77 MB)"
        "$PYTHON" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
            --dest "$CACHE" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    else
        echo "build_ggml: reusing downloaded $SDIST"
    fi
fi

# 2. Unpack (only the vendored llama.cpp is needed).
SRC="$CACHE/src"
if [ ! -f "$TOP/vendor/llama.cpp/CMakeLists.txt" ]; then
    echo "build_ggml: unpacking vendor/llama.cpp into $SRC"
    rm -rf "$SRC"
    mkdir -p "$SRC"
    tar -xzf "$SDIST" -C "$SRC" "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
else
    echo "build_ggml: sources already unpacked in $TOP"
fi

# 3. Configure and build the ggml-base target.
BUILD="$CACHE/build"
# the CPU code only (macOS would add Metal and Accelerate)
configure_llama_cpp build_ggml "$BUILD" "$CACHE/cmake-configure.log" -DGGML_NATIVE=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF
echo "build_ggml: building target ggml-base (-j2)"
cmake --build "$BUILD" --target ggml-base -j2

# 4. Install the library (with its version symlinks) and the public header.
install_libs build_ggml "$BUILD" "$LIBDIR" libggml-base
mkdir -p "$CACHE/include"
cp "$TOP/vendor/llama.cpp/ggml/include/ggml.h" "$CACHE/include/"
echo "build_ggml: installed into $LIBDIR:"
ls -l "$LIBDIR"
