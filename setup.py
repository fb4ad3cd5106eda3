"""Packages of the wheel: gguf_dequant and its subpackages, plus the Metal sources (metal/*.metal, *.h) as
gguf_dequant/metal/ so that the run-time Metal path works from an installed wheel. The repository keeps one
copy of them, in metal/; pyproject.toml cannot map a directory into a package while finding the others."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["gguf_dequant", "gguf_dequant.*"]), "gguf_dequant.metal"],
    package_dir={"gguf_dequant.metal": "metal"},
    package_data={"gguf_dequant.metal": ["*.metal", "*.h"]},
)
