#!/usr/bin/env bash
# Build llama.cpp's `llama` shared library (libllama.so with libggml, libggml-base, libggml-cpu) in the
# source and build tree that tools/build_ggml.sh prepares (same llama-cpp-python sdist, same cmake
# options), and install it into <repo>/.cache/llama/lib/. The end-to-end test (tests/test_end_to_end.py)
# calls llama_model_quantize from it through ctypes to make real Q4_K_M / Q6_K / IQ4_XS / Q8_0 files
# (oracles.md section 2.5). Only the `llama` target is built; a few minutes on two cores.
#
# Environment:
#   GGML_CACHE     build_ggml.sh's working directory (default <repo>/.cache/ggml); GGML_SDIST and PYTHON
#                  are passed on to it
#   LLAMA_CACHE    where the library is installed (default <repo>/.cache/llama)
#   LLAMA_JOBS     parallel build jobs (default 2)
#   LLAMA_FORCE=1  rebuild even if the library is already installed
#
# Idempotent: does nothing when <llama cache>/lib/libllama.so (.dylib on macOS) exists.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/llama_cpp_common.sh"  # ROOT, GGML_CACHE, TOP, SO
CACHE="${LLAMA_CACHE:-$ROOT/.cache/llama}"
LIBDIR="$CACHE/lib"

if [ -e "$LIBDIR/libllama.$SO" ] && [ "${LLAMA_FORCE:-0}" != "1" ]; then
    echo "build_llama: $LIBDIR/libllama.$SO already exists, nothing to do (LLAMA_FORCE=1 rebuilds)"
    exit 0
fi

# 1. The unpacked sources and the configured build tree come from build_ggml.sh.
BUILD="$GGML_CACHE/build"
if [ ! -f "$TOP/vendor/llama.cpp/CMakeLists.txt" ] || [ ! -f "$BUILD/CMakeCache.txt" ]; then
    echo "build_llama: preparing sources and the build tree with tools/build_ggml.sh"
    GGML_CACHE="$GGML_CACHE" GGML_FORCE=1 bash "$ROOT/tools/build_ggml.sh"
fi

# 2. Build the llama target.
echo "build_llama: building target llama (-j${LLAMA_JOBS:-2}) in $BUILD"
start=$(date +%s)
cmake --build "$BUILD" --target llama -j"${LLAMA_JOBS:-2}"
echo "build_llama: built in $(( $(date +%s) - start )) s"

# 3. Install the libraries (with their version symlinks; the build sets an RPATH to the build tree, so
#    the test loads the dependencies explicitly from LIBDIR first) and the public header.
install_libs build_llama "$BUILD" "$LIBDIR" libggml-base libggml-cpu libggml libllama
mkdir -p "$CACHE/include"
cp "$TOP/vendor/llama.cpp/include/llama.h" "$CACHE/include/"
echo "build_llama: installed into $LIBDIR:"
ls -l "$LIBDIR"
