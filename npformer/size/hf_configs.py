"""Hugging Face ``config.json`` files as ModelShapes, for model types gpt2, llama, mistral, mixtral, bert, t5, vit.

Each converter follows the model transformers builds from the config, parameter by parameter, so the count equals
transformers' ``num_parameters()`` of that model (tests/size compares them on models built on the meta device):

    gpt2, llama, mistral, mixtral   AutoModelForCausalLM: the LM head is counted once when it is tied to the
                                    token table (tie_word_embeddings)
    t5                              AutoModelForSeq2SeqLM (T5ForConditionalGeneration): one shared token table,
                                    which is the LM head too: transformers 5 ties them always (for a T5 v1.1
                                    config, tie_word_embeddings=false now only turns off the scaling of the
                                    decoder's output; transformers 4 built v1.1 a separate head, C V more)
    bert, vit                       AutoModel (BertModel, ViTModel) with its pooler, as BERT's "110M" counts it

A field the file leaves out takes transformers' default for that model type (the values below).
"""

from __future__ import annotations

import json
import os

from .shapes import AttentionShape, FeedForwardShape, LayerShape, ModelShape, StackShape

DEFAULTS = {
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 tie_word_embeddings=True),
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, attention_bias=False,
                  mlp_bias=False, tie_word_embeddings=False, max_position_embeddings=2048),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, tie_word_embeddings=False,
                    max_position_embeddings=131072, sliding_window=4096),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, tie_word_embeddings=False,
                    max_position_embeddings=131072, num_local_experts=8, num_experts_per_tok=2, sliding_window=None),
    "bert": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    "t5": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=None,
               num_heads=8, relative_attention_num_buckets=32, feed_forward_proj="relu"),
    "vit": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                image_size=224, patch_size=16, num_channels=3, qkv_bias=True, pooler_output_size=None),
}
MODEL_TYPES = tuple(DEFAULTS)
NULL_IS_A_VALUE = {"sliding_window"}  # Mistral v0.2+ write "sliding_window": null for full attention
NOT_SIZES = {"tie_word_embeddings", "attention_bias", "mlp_bias", "qkv_bias", "feed_forward_proj"}


def _fields(config: dict, where: str) -> dict:
    """The config's fields over transformers' defaults for its model type (a field given as null keeps the
    default, as transformers does, but those in NULL_IS_A_VALUE: a null sliding_window is no window); sizes must
    be positive integers. Errors name ``where`` and the field."""
    if not isinstance(config, dict):
        raise ValueError(f"{where}: a config must be a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type not in DEFAULTS:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported model types: "
                         f"{', '.join(MODEL_TYPES)}")
    values = dict(DEFAULTS[model_type])
    for name in values:
        if config.get(name) is not None or (name in NULL_IS_A_VALUE and name in config):
            values[name] = config[name]
    for name, value in values.items():
        if name not in NOT_SIZES and value is not None and \
                (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
    return values


def _decoder_only(c: dict, name: str, C: int, V: int, L: int, H: int, Hkv: int, D: int, F: int, *,
                  attn_bias: bool, mlp_bias: bool, experts: int = 1, per_token: int = 1,
                  router: bool = False) -> ModelShape:
    """Llama, Mistral, Mixtral: RMSNorm (weight only) twice per layer and once at the end, SwiGLU, RoPE; Mistral
    and Mixtral attend over a sliding window of ``sliding_window`` positions when it is set (and shorter than the
    context)."""
    window = c.get("sliding_window")
    if window is not None and c.get("max_position_embeddings") is not None and window >= c["max_position_embeddings"]:
        window = None  # a window as long as the context is full causal attention
    attention = AttentionShape(C, H, Hkv, D, C, qkv_bias=attn_bias, out_bias=attn_bias, window=window)
    ffn = FeedForwardShape(C, F, gated=True, bias=mlp_bias, n_experts=experts, experts_per_token=per_token,
                           router=router, activation="swiglu")
    layer = LayerShape(attention, ffn, norm_params=2 * C, n_norms=2, causal=True)
    tied = bool(c["tie_word_embeddings"])
    return ModelShape(name, "decoder", C, V, (StackShape("decoder", L, layer, final_norm_params=C),),
                      embedding_params=V * C, head_params=0 if tied else C * V, head_weights=C * V,
                      max_positions=c.get("max_position_embeddings"), logits_per_token=V)


def gpt2(c: dict, name: str) -> ModelShape:
    C, V, L, H = c["n_embd"], c["vocab_size"], c["n_layer"], c["n_head"]
    F = c["n_inner"] or 4 * C
    attention = AttentionShape(C, H, H, C // H, C, qkv_bias=True, out_bias=True)
    layer = LayerShape(attention, FeedForwardShape(C, F, gated=False, bias=True), norm_params=4 * C, n_norms=2,
                       causal=True)
    tied = bool(c["tie_word_embeddings"])
    return ModelShape(name, "decoder", C, V, (StackShape("decoder", L, layer, final_norm_params=2 * C),),
                      embedding_params=V * C + c["n_positions"] * C, head_params=0 if tied else C * V,
                      head_weights=C * V, max_positions=c["n_positions"], logits_per_token=V)


def llama(c: dict, name: str) -> ModelShape:
    C, H = c["hidden_size"], c["num_attention_heads"]
    return _decoder_only(c, name, C, c["vocab_size"], c["num_hidden_layers"], H, c["num_key_value_heads"] or H,
                         c["head_dim"] or C // H, c["intermediate_size"], attn_bias=bool(c["attention_bias"]),
                         mlp_bias=bool(c["mlp_bias"]))


def mistral(c: dict, name: str) -> ModelShape:
    C, H = c["hidden_size"], c["num_attention_heads"]
    return _decoder_only(c, name, C, c["vocab_size"], c["num_hidden_layers"], H, c["num_key_value_heads"] or H,
                         c["head_dim"] or C // H, c["intermediate_size"], attn_bias=False, mlp_bias=False)


def mixtral(c: dict, name: str) -> ModelShape:
    C, H = c["hidden_size"], c["num_attention_heads"]
    return _decoder_only(c, name, C, c["vocab_size"], c["num_hidden_layers"], H, c["num_key_value_heads"] or H,
                         c["head_dim"] or C // H, c["intermediate_size"], attn_bias=False, mlp_bias=False,
                         experts=c["num_local_experts"], per_token=c["num_experts_per_tok"], router=True)


def bert(c: dict, name: str) -> ModelShape:
    """BertModel: word, position and token-type tables and their LayerNorm; post-LN layers; the pooler."""
    C, H, V = c["hidden_size"], c["num_attention_heads"], c["vocab_size"]
    attention = AttentionShape(C, H, H, C // H, C, qkv_bias=True, out_bias=True)
    ffn = FeedForwardShape(C, c["intermediate_size"], gated=False, bias=True)
    layer = LayerShape(attention, ffn, norm_params=4 * C, n_norms=2, causal=False, norm_placement="post")
    tables = (V + c["max_position_embeddings"] + c["type_vocab_size"]) * C
    return ModelShape(name, "encoder", C, V, (StackShape("encoder", c["num_hidden_layers"], layer),),
                      embedding_params=tables, extra_norm_params=2 * C, head_params=C * C + C, head_weights=0,
                      max_positions=c["max_position_embeddings"],
                      notes=("BertModel with its pooler (a (C, C) layer on the first token, once per sequence)",))


def t5(c: dict, name: str) -> ModelShape:
    """T5: one shared token table (also the LM head), no biases, T5LayerNorm (weight only), a relative position
    bias table (buckets x H) in the first self-attention of each stack; ReLU or gated-GELU feed-forward."""
    C, H, D, V = c["d_model"], c["num_heads"], c["d_kv"], c["vocab_size"]
    gated = str(c["feed_forward_proj"]).startswith("gated-")
    ffn = FeedForwardShape(C, c["d_ff"], gated=gated, bias=False, activation="geglu" if gated else "relu")
    attention = AttentionShape(C, H, H, D, C, qkv_bias=False, out_bias=False)
    bias_table = c["relative_attention_num_buckets"] * H
    encoder = StackShape("encoder", c["num_layers"], LayerShape(attention, ffn, 2 * C, 2, causal=False),
                         final_norm_params=C, attention_extra=bias_table)
    decoder = StackShape("decoder", c["num_decoder_layers"] or c["num_layers"],
                         LayerShape(attention, ffn, 3 * C, 3, causal=True, cross=attention),
                         final_norm_params=C, attention_extra=bias_table)
    return ModelShape(name, "encoder-decoder", C, V, (encoder, decoder), embedding_params=V * C, head_params=0,
                      head_weights=C * V, max_positions=None, logits_per_token=V,
                      notes=("the LM head is the shared token table (transformers 5 ties T5's always)",))


def vit(c: dict, name: str) -> ModelShape:
    """ViTModel: a patch projection (a convolution with stride = patch size: one matrix product per patch), a
    class token, position embeddings for every patch and the class token; pre-LN layers; a final LayerNorm;
    the pooler. A "token" is a patch (plus the class token)."""
    C, H, p = c["hidden_size"], c["num_attention_heads"], c["patch_size"]
    n_patches = (c["image_size"] // p) ** 2
    attention = AttentionShape(C, H, H, C // H, C, qkv_bias=bool(c["qkv_bias"]), out_bias=True)
    ffn = FeedForwardShape(C, c["intermediate_size"], gated=False, bias=True)
    layer = LayerShape(attention, ffn, norm_params=4 * C, n_norms=2, causal=False)
    patch_weights = c["num_channels"] * p * p * C
    pooler_out = c["pooler_output_size"] or C
    return ModelShape(name, "encoder", C, 0, (StackShape("encoder", c["num_hidden_layers"], layer,
                                                         final_norm_params=2 * C),),
                      embedding_params=C + (n_patches + 1) * C + C, embedding_weights=patch_weights,
                      head_params=C * pooler_out + pooler_out, head_weights=0, max_positions=n_patches + 1,
                      notes=(f"{n_patches} patches of {p}x{p} + a class token per image",))


CONVERTERS = {"gpt2": gpt2, "llama": llama, "mistral": mistral, "mixtral": mixtral, "bert": bert, "t5": t5,
              "vit": vit}


def shape_from_hf_config(config: dict, name: str | None = None, where: str = "config") -> ModelShape:
    """A Hugging Face config (the dict of its config.json) -> ModelShape."""
    values = _fields(config, where)
    model_type = config["model_type"]
    try:
        return CONVERTERS[model_type](values, name or model_type)
    except (TypeError, ZeroDivisionError) as exc:
        raise ValueError(f"{where}: a {model_type} config with unusable sizes: {exc}") from None


def read_hf_config(path: str) -> ModelShape:
    """The ModelShape of the config.json at ``path`` (or in the model directory ``path``)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path!r}: not a JSON file ({exc})") from None
    return shape_from_hf_config(config, name=path, where=repr(path))
