# Sourced by tools/build_llama.sh and tools/build_llama_native.sh.
# install_libs TAG BUILD LIBDIR LIB...: copy each shared library LIB (libggml-base, ...) found under the build tree
# BUILD into LIBDIR with its version symlinks (LIB.so* on Linux, LIB*.dylib on macOS); fail naming the first one
# the build did not produce.
install_libs() {
    local tag=$1 build=$2 libdir=$3 so=so built lib
    shift 3
    [ "$(uname -s)" = Darwin ] && so=dylib
    mkdir -p "$libdir"
    for lib in "$@"; do
        built=$(find "$build" -name "$lib.$so" | head -n 1)
        if [ -z "$built" ]; then
            echo "$tag: $lib.$so was not produced" >&2
            return 1
        fi
        if [ "$so" = so ]; then
            cp -P "$(dirname "$built")/$lib".so* "$libdir/"
        else
            cp -P "$(dirname "$built")/$lib"*.dylib "$libdir/"
        fi
    done
}
