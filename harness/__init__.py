"""Development tooling, not product: compile Metal shaders with clang-19 as C++ for OpenCL against our own
``metal_stdlib`` shim (``harness/shim``) and run their kernels on the CPU with Metal's execution model
(``msl_harness``: compile driver and launcher; ``scheduler``: fibers per threadgroup, barriers, SIMD-group
functions, threadgroup memory; ``instrument``: threadgroup access checks), and lint them for what Apple's
compiler rejects (``msl_lint``). Not shipped in the wheel. See ``harness/README.md``."""
