"""Integrations of gguf-dequant with model libraries (``gguf_dequant.integrations.transformers``)."""
