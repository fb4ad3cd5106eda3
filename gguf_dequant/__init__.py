"""gguf-dequant: exact, fast dequantization of GGUF/GGML quantized blocks into torch tensors.

``gguf_dequant.dequantize`` picks the fastest correct backend for the tensor's device (compiled kernel
build, run-time Metal path, or the pure-torch reference; see ``gguf_dequant.backends``);
``gguf_dequant.reference.dequantize`` is the reference itself. ``gguf_dequant.linear`` computes
``x @ W.T + bias`` on the packed weights with the same backend choice.
"""

from .backends import BackendUnavailableError, available_backends, dequantize, explain, linear
from .reference import OUTPUT_DTYPES, output_shape
from .types import SUPPORTED, QuantType, UnsupportedTypeError, resolve

__all__ = ["dequantize", "linear", "explain", "available_backends", "BackendUnavailableError", "output_shape",
           "resolve", "QuantType", "SUPPORTED", "UnsupportedTypeError", "OUTPUT_DTYPES"]
