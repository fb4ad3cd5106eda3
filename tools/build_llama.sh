#!/usr/bin/env bash
# Build llama.cpp's `llama` shared library (libllama.so with libggml, libggml-base, libggml-cpu) from the
# same llama-cpp-python source distribution as tools/build_ggml.sh, and install it into
# <repo>/.cache/llama/lib/. The end-to-end test (tests/test_end_to_end.py) calls llama_model_quantize
# from it through ctypes to make real Q4_K_M / Q6_K / IQ4_XS / Q8_0 files (oracles.md section 2.5).
# Only the `llama` target is built (no tools, examples or tests); a few minutes on two cores.
#
# Environment:
#   GGML_SDIST     path to an already downloaded llama_cpp_python-<version>.tar.gz (skips the download)
#   GGML_CACHE     where build_ggml.sh keeps the sdist and unpacked sources (default <repo>/.cache/ggml);
#                  its unpacked sources are reused when present
#   LLAMA_CACHE    working directory of this build (default <repo>/.cache/llama)
#   PYTHON         interpreter whose pip downloads the sdist (default: python3)
#   LLAMA_FORCE=1  rebuild even if the library is already installed
#
# Idempotent: does nothing when <llama cache>/lib/libllama.so exists.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GGML_CACHE="${GGML_CACHE:-$ROOT/.cache/ggml}"
CACHE="${LLAMA_CACHE:-$ROOT/.cache/llama}"
LIBDIR="$CACHE/lib"
PYTHON="${PYTHON:-python3}"

if [ -e "$LIBDIR/libllama.so" ] && [ "${LLAMA_FORCE:-0}" != "1" ]; then
    echo "build_llama: $LIBDIR/libllama.so already exists, nothing to do (LLAMA_FORCE=1 rebuilds)"
    exit 0
fi
mkdir -p "$CACHE"

# 1. Sources: reuse build_ggml.sh's unpacked tree, else unpack the sdist (downloading it if needed).
TOP="$GGML_CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
if [ ! -f "$TOP/vendor/llama.cpp/CMakeLists.txt" ]; then
    TOP="$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
fi
if [ ! -f "$TOP/vendor/llama.cpp/CMakeLists.txt" ]; then
    if [ -n "${GGML_SDIST:-}" ]; then
        [ -f "$GGML_SDIST" ] || { echo "build_llama: GGML_SDIST=$GGML_SDIST does not exist" >&2; exit 1; }
        SDIST="$GGML_SDIST"
    else
        SDIST="$GGML_CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
        [ -f "$SDIST" ] || SDIST="$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
        if [ ! -f "$SDIST" ]; then
            echo "build_llama: downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (source distribution, ~77 MB)"
            "$PYTHON" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
                --dest "$CACHE" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
        fi
    fi
    echo "build_llama: unpacking vendor/llama.cpp from $SDIST"
    rm -rf "$CACHE/src"
    mkdir -p "$CACHE/src"
    tar -xzf "$SDIST" -C "$CACHE/src" "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
fi
echo "build_llama: sources in $TOP"

# 2. Configure (same options as build_ggml.sh, separate build directory) and build the llama target.
BUILD="$CACHE/build"
if command -v ninja >/dev/null 2>&1; then GENERATOR=Ninja; else GENERATOR="Unix Makefiles"; fi
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=$GENERATOR\$" "$BUILD/CMakeCache.txt"; then
    rm -rf "$BUILD"
fi
echo "build_llama: cmake configure ($GENERATOR) in $BUILD"
cmake -S "$TOP/vendor/llama.cpp" -B "$BUILD" -G "$GENERATOR" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >"$CACHE/cmake-configure.log" 2>&1 || {
    cat "$CACHE/cmake-configure.log" >&2
    exit 1
}
echo "build_llama: building target llama (-j${LLAMA_JOBS:-2})"
start=$(date +%s)
cmake --build "$BUILD" --target llama -j"${LLAMA_JOBS:-2}"
echo "build_llama: built in $(( $(date +%s) - start )) s"

# 3. Install the libraries (with their version symlinks; the build sets an RPATH to the build tree, so
#    the test loads the dependencies explicitly from LIBDIR first) and the public headers.
mkdir -p "$LIBDIR" "$CACHE/include"
for lib in libggml-base libggml-cpu libggml libllama; do
    BUILT=$(find "$BUILD" -name "$lib.so" | head -n 1)
    if [ -z "$BUILT" ]; then
        echo "build_llama: $lib.so was not produced" >&2
        exit 1
    fi
    cp -P "$(dirname "$BUILT")/$lib".so* "$LIBDIR/"
done
cp "$TOP/vendor/llama.cpp/include/llama.h" "$CACHE/include/"
echo "build_llama: installed into $LIBDIR:"
ls -l "$LIBDIR"
