"""Independent implementations the test suites compare against (ggml's own C code through ctypes)."""
