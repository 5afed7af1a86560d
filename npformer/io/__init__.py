"""Files other programs write and read: safetensors (Hugging Face's tensor format), with NumPy alone."""

from .safetensors import SafetensorsError, load_safetensors, save_safetensors

__all__ = ["SafetensorsError", "load_safetensors", "save_safetensors"]
