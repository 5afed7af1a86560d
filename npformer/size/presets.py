"""Named models: the famous ones as the config.json their authors published (the fields that decide their size),
and npformer's own training configurations.

    gpt2, gpt2-medium, gpt2-large, gpt2-xl    OpenAI GPT-2 (124M, 355M, 774M, 1.5B)
    gpt3-175b                                 GPT-3 175B's shape (Brown et al. 2020, table 2.1) as a GPT-2 config:
                                              its alternating sparse attention changes no parameter count
    bert-base, bert-large                     BERT (uncased vocabulary), with the pooler
    llama-2-7b, llama-2-70b                   Llama 2 (70B: grouped-query attention, 8 key/value heads)
    mistral-7b                                Mistral 7B v0.1
    mixtral-8x7b                              Mixtral 8x7B: 8 experts, 2 per token
    t5-base                                   T5 v1.0 base (tied LM head)
    vit-b-16                                  ViT-Base/16 at 224x224, ViTModel with the pooler
    baby, shakespeare-char                    npformer's train_char default (nanoGPT's baby GPT) and nanoGPT's
                                              shakespeare_char config, vocabulary 65
    transformer-base                          npformer's EncoderDecoderConfig preset ("Attention Is All You Need")
"""

from __future__ import annotations

import dataclasses

from ..models import EncoderDecoderConfig, GPTConfig
from .hf_configs import shape_from_hf_config
from .npformer_configs import shape_of
from .shapes import ModelShape

HF_PRESETS = {
    "gpt2": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=1600, n_layer=48, n_head=25),
    "gpt3-175b": dict(model_type="gpt2", vocab_size=50257, n_positions=2048, n_embd=12288, n_layer=96, n_head=96),
    "bert-base": dict(model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    "bert-large": dict(model_type="bert", vocab_size=30522, hidden_size=1024, num_hidden_layers=24,
                       num_attention_heads=16, intermediate_size=4096, max_position_embeddings=512,
                       type_vocab_size=2),
    "llama-2-7b": dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, tie_word_embeddings=False),
    "llama-2-70b": dict(model_type="llama", vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                        max_position_embeddings=4096, tie_word_embeddings=False),
    "mistral-7b": dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=32768, tie_word_embeddings=False),
    "mixtral-8x7b": dict(model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         max_position_embeddings=32768, num_local_experts=8, num_experts_per_tok=2,
                         tie_word_embeddings=False),
    "t5-base": dict(model_type="t5", vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                    num_decoder_layers=12, num_heads=12, relative_attention_num_buckets=32, feed_forward_proj="relu",
                    tie_word_embeddings=True),
    "vit-b-16": dict(model_type="vit", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, image_size=224, patch_size=16, num_channels=3, qkv_bias=True),
}


def npformer_presets() -> dict:
    """npformer's named configurations (built on demand: a config validates itself)."""
    return {
        "baby": GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
        "shakespeare-char": GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),
        "transformer-base": EncoderDecoderConfig.preset("transformer-base"),
    }


NPFORMER_PRESETS = ("baby", "shakespeare-char", "transformer-base")
PRESET_NAMES = tuple(HF_PRESETS) + NPFORMER_PRESETS


def preset_shape(name: str) -> ModelShape:
    """The ModelShape of a named model (see the module's docstring)."""
    if name in HF_PRESETS:
        return shape_from_hf_config(HF_PRESETS[name], name=name, where=f"preset {name!r}")
    if name in NPFORMER_PRESETS:
        return dataclasses.replace(shape_of(npformer_presets()[name]), name=name)
    raise ValueError(f"unknown model {name!r}; named models: {', '.join(PRESET_NAMES)}")
