"""npformer's own model configs as ModelShapes: GPTConfig, EncoderConfig, EncoderDecoderConfig.

Each function follows its model's constructor (npformer/models/*.py) parameter by parameter, so the count equals
the built model's ``num_parameters()`` (tests/size holds them equal for every config hypothesis draws). A model
type added to npformer gets its converter here, and ``shape_of`` names the types it knows.
"""

from __future__ import annotations

from ..models import EncoderConfig, EncoderDecoderConfig, GPTConfig
from .shapes import AttentionShape, FeedForwardShape, LayerShape, ModelShape, StackShape


def _norm_params(kind: str, C: int, bias: bool) -> int:
    """LayerNorm: weight and (with bias) bias; RMSNorm: weight only."""
    return 2 * C if kind == "layernorm" and bias else C


def _layer(cfg, n_kv_head: int, causal: bool, cross: bool) -> LayerShape:
    C, H = cfg.n_embd, cfg.n_head
    D = C // H
    attention = AttentionShape(C, H, n_kv_head, D, C, qkv_bias=cfg.bias, out_bias=cfg.bias,
                               window=getattr(cfg, "window", None))
    cross_attention = AttentionShape(C, H, H, D, C, qkv_bias=cfg.bias, out_bias=cfg.bias) if cross else None
    if cfg.ffn_kind == "moe":  # GPTConfig's mixture of experts: E experts, k per token, a (C, E) gate, no bias
        ffn = FeedForwardShape(C, cfg.ffn_hidden, gated=cfg.expert_kind == "swiglu", bias=cfg.bias,
                               n_experts=cfg.n_experts, experts_per_token=cfg.top_k, router=True,
                               activation=cfg.expert_kind)
    else:
        ffn = FeedForwardShape(C, cfg.ffn_hidden, gated=cfg.ffn_kind == "swiglu", bias=cfg.bias,
                               activation=cfg.ffn_kind)
    n_norms = 3 if cross else 2
    return LayerShape(attention, ffn, n_norms * _norm_params(cfg.norm, C, cfg.bias), n_norms, causal,
                      cross_attention, cfg.norm_placement)


def _final_norm(cfg) -> int:
    """Pre-LN stacks end with a norm; post-LN blocks end in one already."""
    return _norm_params(cfg.norm, cfg.n_embd, cfg.bias) if cfg.norm_placement == "pre" else 0


def gpt_shape(cfg: GPTConfig, name: str = "npformer GPT") -> ModelShape:
    C, V = cfg.n_embd, cfg.vocab_size
    learned = cfg.positions == "learned"
    stack = StackShape("decoder", cfg.n_layer, _layer(cfg, cfg.n_kv_head, causal=True, cross=False),
                       final_norm_params=_final_norm(cfg))
    return ModelShape(name, "decoder", C, V, (stack,),
                      embedding_params=V * C + (cfg.block_size * C if learned else 0),
                      head_params=0 if cfg.tie_embeddings else C * V, head_weights=C * V,
                      max_positions=cfg.block_size if learned else None, logits_per_token=V, attn_impl=cfg.attn_impl,
                      notes=("the LM head is the token table, counted once",) if cfg.tie_embeddings else ())


def encoder_shape(cfg: EncoderConfig, name: str = "npformer Encoder") -> ModelShape:
    C, V = cfg.n_embd, cfg.vocab_size
    stack = StackShape("encoder", cfg.n_layer, _layer(cfg, cfg.n_head, causal=False, cross=False),
                       final_norm_params=_final_norm(cfg))
    head = (V if cfg.mlm_head else 0) + (C * cfg.n_classes + cfg.n_classes if cfg.n_classes else 0)
    return ModelShape(name, "encoder", C, V, (stack,),
                      embedding_params=V * C + (cfg.max_len * C if cfg.positions == "learned" else 0),
                      head_params=head, head_weights=C * V if cfg.mlm_head else 0, max_positions=cfg.max_len,
                      logits_per_token=V if cfg.mlm_head else 0, attn_impl=cfg.attn_impl)


def encoder_decoder_shape(cfg: EncoderDecoderConfig, name: str = "npformer EncoderDecoder") -> ModelShape:
    C = cfg.n_embd
    positions = cfg.max_len * C if cfg.positions == "learned" else 0
    enc_cfg = cfg.encoder_config()
    encoder = StackShape("encoder", cfg.n_encoder_layer, _layer(enc_cfg, cfg.n_head, causal=False, cross=False),
                         final_norm_params=_final_norm(cfg))
    decoder = StackShape("decoder", cfg.n_decoder_layer, _layer(cfg, cfg.n_head, causal=True, cross=True),
                         final_norm_params=_final_norm(cfg))
    tables = cfg.src_vocab_size * C + positions + (0 if cfg.share_embeddings else cfg.tgt_vocab_size * C) + positions
    return ModelShape(name, "encoder-decoder", C, cfg.tgt_vocab_size, (encoder, decoder),
                      embedding_params=tables, head_params=0 if cfg.tie_output else C * cfg.tgt_vocab_size,
                      head_weights=C * cfg.tgt_vocab_size, max_positions=cfg.max_len,
                      logits_per_token=cfg.tgt_vocab_size, attn_impl=cfg.attn_impl)


CONVERTERS = {GPTConfig: gpt_shape, EncoderConfig: encoder_shape, EncoderDecoderConfig: encoder_decoder_shape}


def shape_of(config) -> ModelShape:
    """An npformer config (GPTConfig, EncoderConfig, EncoderDecoderConfig) -> its ModelShape."""
    for cls, convert in CONVERTERS.items():
        if isinstance(config, cls):
            return convert(config)
    known = ", ".join(cls.__name__ for cls in CONVERTERS)
    raise TypeError(f"size: no shape for a {type(config).__name__}; npformer configs it knows: {known}")


def config_from_dict(d: dict, where: str = "config"):
    """A config dict (``to_dict()``'s, as checkpoints hold them) -> the npformer config it describes, its kind told
    by the fields only it has: src_vocab_size (EncoderDecoderConfig), block_size (GPTConfig), max_len
    (EncoderConfig)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a config must be a mapping, got {type(d).__name__}")
    for key, cls in (("src_vocab_size", EncoderDecoderConfig), ("block_size", GPTConfig), ("max_len", EncoderConfig)):
        if key in d:
            return cls.from_dict(d, where=where)
    raise ValueError(f"{where}: not an npformer config (it has none of the fields src_vocab_size, block_size, "
                     "max_len)")
