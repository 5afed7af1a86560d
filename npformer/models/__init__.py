"""Models built from npformer's layers."""

from .config import PRESETS, GPTConfig
from .gpt import GPT

__all__ = ["GPT", "GPTConfig", "PRESETS"]
