"""Integrations of gguf-dequant with model libraries (``gguf_dequant.integrations.transformers``,
``gguf_dequant.integrations.diffusers``)."""

from __future__ import annotations

import importlib


def check_library(package: str, versions: tuple[str, str], error: type[Exception], module: str | None = None,
                  names: tuple = ()):
    """Raise ``error`` unless ``package`` is installed at a version in [versions[0], versions[1]); then import
    ``module``, check it defines ``names`` (the internals an integration replaces or calls) and return it."""
    try:
        lib = importlib.import_module(package)
    except ImportError as e:
        raise error(f"{package} is not installed ({e})") from e
    from packaging.version import Version

    first, last = versions
    version = lib.__version__
    if not Version(first) <= Version(version) < Version(last):
        raise error(
            f"{package} {version} is not a version gguf_dequant.integrations.{package} knows (>={first},<{last}); its "
            f"GGUF internals may have changed. Install {package}>={first},<{last}, or a gguf-dequant release that "
            f"supports {version}.")
    if module is None:
        return None
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise error(f"{package} {version} has no module {module} ({e})") from e
    missing = [name for name in names if not hasattr(mod, name)]
    if missing:
        raise error(f"{package} {version}'s {module} lacks {', '.join(missing)}: its GGUF internals changed and "
                    "gguf-dequant cannot hook into them")
    return mod
