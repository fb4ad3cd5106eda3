# Sourced by tools/build_ggml.sh, tools/build_llama.sh and tools/build_llama_native.sh: what their three builds of
# the llama.cpp vendored in one llama-cpp-python source distribution share. Sets LLAMA_CPP_PYTHON_VERSION, ROOT (the
# repository), GGML_CACHE (build_ggml.sh's working directory, default <repo>/.cache/ggml), TOP (the unpacked
# distribution in it) and SO (the shared-library suffix: so on Linux, dylib on macOS).
LLAMA_CPP_PYTHON_VERSION=0.3.36
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GGML_CACHE="${GGML_CACHE:-$ROOT/.cache/ggml}"
TOP="$GGML_CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
if [ "$(uname -s)" = Darwin ]; then SO=dylib; else SO=so; fi

# configure_llama_cpp TAG BUILD LOG OPTION...: cmake-configure $TOP's llama.cpp into the build tree BUILD (Ninja when
# it is installed, else make; a tree configured with the other generator is removed first) as a Release build of
# shared libraries without tests, examples, tools, server, curl or OpenSSL, plus the OPTIONs; cmake's output goes
# to LOG, shown on failure.
configure_llama_cpp() {
    local tag=$1 build=$2 log=$3 generator=Ninja
    shift 3
    if ! command -v ninja >/dev/null 2>&1; then
        generator="Unix Makefiles"
        echo "$tag: ninja not found, using make"
    fi
    if [ -f "$build/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=$generator\$" "$build/CMakeCache.txt"; then
        rm -rf "$build"
    fi
    echo "$tag: cmake configure ($generator${*:+, $*}) in $build"
    cmake -S "$TOP/vendor/llama.cpp" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF "$@" >"$log" 2>&1 || {
        cat "$log" >&2
        return 1
    }
}

# install_libs TAG BUILD LIBDIR LIB...: copy each shared library LIB (libggml-base, ...) found under the build tree
# BUILD into LIBDIR with its version symlinks (LIB.so* on Linux, LIB*.dylib on macOS); fail naming the first one
# the build did not produce.
install_libs() {
    local tag=$1 build=$2 libdir=$3 built lib
    shift 3
    mkdir -p "$libdir"
    for lib in "$@"; do
        built=$(find "$build" -name "$lib.$SO" | head -n 1)
        if [ -z "$built" ]; then
            echo "$tag: $lib.$SO was not produced" >&2
            return 1
        fi
        if [ "$SO" = so ]; then
            cp -P "$(dirname "$built")/$lib".so* "$libdir/"
        else
            cp -P "$(dirname "$built")/$lib"*.dylib "$libdir/"
        fi
    done
}
