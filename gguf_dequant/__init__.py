"""gguf-dequant: exact, fast dequantization of GGUF/GGML quantized blocks into torch tensors."""

from .reference import OUTPUT_DTYPES, dequantize, output_shape
from .types import SUPPORTED, QuantType, UnsupportedTypeError, resolve

__all__ = ["dequantize", "output_shape", "resolve", "QuantType", "SUPPORTED", "UnsupportedTypeError",
           "OUTPUT_DTYPES"]
