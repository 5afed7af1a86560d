"""Models built from npformer's layers."""

from .config import PRESETS, GPTConfig
from .gpt import GPT

__all__ = ["GPT", "GPTConfig", "PRESETS"]

from .encoder import Encoder, EncoderConfig, mask_tokens  # noqa: E402
from .encoder_decoder import EncoderDecoder, EncoderDecoderConfig  # noqa: E402

__all__ += ["Encoder", "EncoderConfig", "EncoderDecoder", "EncoderDecoderConfig", "mask_tokens"]

from .vit import PatchEmbedding, ViT, ViTConfig  # noqa: E402

__all__ += ["PatchEmbedding", "ViT", "ViTConfig"]
