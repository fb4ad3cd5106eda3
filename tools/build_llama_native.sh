#!/usr/bin/env bash
# Build llama.cpp's CPU library for this machine's CPU (-DGGML_NATIVE=ON: -march=native, so AVX-512, VNNI,
# BF16, AMX where the CPU has them) from the same llama-cpp-python sdist that tools/build_ggml.sh unpacks, and
# install libggml-base.so + libggml-cpu.so into <repo>/.cache/llama-native/lib/. benchmarks/matmul.py compares
# against it: it is the build a user of this CPU gets. The AVX2 build (tools/build_ggml.sh, build_llama.sh)
# stays the exactness oracle; this one is only for speed. A few minutes on two cores.
#
# Environment:
#   GGML_CACHE      build_ggml.sh's working directory (default <repo>/.cache/ggml); GGML_SDIST and PYTHON
#                   are passed on to it
#   NATIVE_CACHE    build tree and install prefix (default <repo>/.cache/llama-native)
#   LLAMA_JOBS      parallel build jobs (default 2)
#   NATIVE_FORCE=1  rebuild even if the library is already installed
#
# Idempotent: does nothing when <native cache>/lib/libggml-cpu.so exists and was built on a CPU with the same
# flags (the native build is only valid for the CPU it was made on; a different CPU rebuilds).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/llama_cpp_common.sh"  # ROOT, GGML_CACHE, TOP
CACHE="${NATIVE_CACHE:-$ROOT/.cache/llama-native}"
LIBDIR="$CACHE/lib"
CPU_ID="$(grep -m1 '^flags' /proc/cpuinfo | md5sum | cut -c1-16)"

if [ -e "$LIBDIR/libggml-cpu.so" ] && [ "$(cat "$CACHE/cpu-id" 2>/dev/null)" = "$CPU_ID" ] \
    && [ "${NATIVE_FORCE:-0}" != "1" ]; then
    echo "build_llama_native: $LIBDIR/libggml-cpu.so already built for this CPU (NATIVE_FORCE=1 rebuilds)"
    exit 0
fi

if [ ! -f "$TOP/vendor/llama.cpp/CMakeLists.txt" ]; then
    echo "build_llama_native: unpacking the sources with tools/build_ggml.sh"
    GGML_CACHE="$GGML_CACHE" GGML_FORCE=1 bash "$ROOT/tools/build_ggml.sh"
fi

BUILD="$CACHE/build"
mkdir -p "$CACHE"
configure_llama_cpp build_llama_native "$BUILD" "$CACHE/cmake-configure.log" -DGGML_NATIVE=ON
echo "build_llama_native: building target ggml-cpu (-j${LLAMA_JOBS:-2})"
start=$(date +%s)
# The build's own output (tens of thousands of lines of compiler notes) goes to a log, shown on failure.
cmake --build "$BUILD" --target ggml-cpu -j"${LLAMA_JOBS:-2}" >"$CACHE/build.log" 2>&1 || {
    tail -n 100 "$CACHE/build.log" >&2
    exit 1
}
echo "build_llama_native: built in $(( $(date +%s) - start )) s"

install_libs build_llama_native "$BUILD" "$LIBDIR" libggml-base libggml-cpu
echo "$CPU_ID" >"$CACHE/cpu-id"
echo "build_llama_native: installed into $LIBDIR:"
ls -l "$LIBDIR"
