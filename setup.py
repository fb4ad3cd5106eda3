"""Packages of the wheel: what runs for users, and the Metal sources.

- gguf_dequant and its run-time subpackages (registry, reference, backend choice and self-check, run-time Metal
  path, CLI, integrations, local build of the CPU variant);
- the Metal sources (metal/*.metal, *.h) as gguf_dequant/metal/, so that the run-time Metal path works from an
  installed wheel. The repository keeps one copy of them, in metal/; pyproject.toml cannot map a directory into
  a package while finding the others.

Development tooling stays in the checkout: the test helpers (gguf_dequant.testing), the test oracles
(gguf_dequant.oracles: llama.cpp through ctypes) and the generators (gguf_dequant.tools). tests/test_wheel.py
proves the installed wheel imports and works without them.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

DEVELOPMENT_PACKAGES = ["gguf_dequant.oracles", "gguf_dequant.oracles.*", "gguf_dequant.tools", "gguf_dequant.tools.*"]
DEVELOPMENT_MODULES = {("gguf_dequant", "testing")}


class BuildPyWithoutDevelopmentModules(build_py):
    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] not in DEVELOPMENT_MODULES]


setup(
    packages=[*find_packages(include=["gguf_dequant", "gguf_dequant.*"], exclude=DEVELOPMENT_PACKAGES),
              "gguf_dequant.metal"],
    package_dir={"gguf_dequant.metal": "metal"},
    package_data={"gguf_dequant.metal": ["*.metal", "*.h"]},
    cmdclass={"build_py": BuildPyWithoutDevelopmentModules},
)
