"""Development tooling, not product: compile Metal shaders with clang-19 as C++ for OpenCL against our
``metal_stdlib`` shim (``harness/shim``) and run their kernels on the CPU (``msl_harness``), and lint them
for what Apple's compiler rejects (``msl_lint``). Not shipped in the wheel."""
