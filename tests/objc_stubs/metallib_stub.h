// Stand-in for the kernel-builder metallib header (tests/objc_stubs/README.md).
#pragma once
namespace gguf_metal { id<MTLLibrary> createLibrary(id<MTLDevice>, NSError **); }
