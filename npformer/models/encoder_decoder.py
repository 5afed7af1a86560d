"""EncoderDecoder: the original Transformer ("Attention Is All You Need"), its backward written out.

Shapes: src (B, S) source ids, tgt_in / tgt_out (B, T) target ids (tgt_in = [bos, y_1 .. y_n], tgt_out =
[y_1 .. y_n, eos]), pad_id at padding on the right; C = n_embd; V target vocabulary.

forward:   memory = encoder(src)  (B, S, C), source padding masked out of its self-attention
           cmask  = (src != pad)  (B, 1, 1, S): the same key mask for every cross-attention
           y = drop(wte_tgt[tgt_in] * s + pos[0:T])
           y = block_l(y, context=memory, context_mask=cmask) for l = 1..L_dec     (causal self-attention, then
                                                                                   cross-attention, then FFN)
           y = norm_f(y) (pre-LN only);  logits = y @ W_out  (W_out = wte_tgt^T when tied)
loss:      label-smoothed mean cross-entropy against tgt_out, pad positions ignored
backward:  the same lines from the bottom up; every decoder block's cross-attention returns a gradient of the
           memory, and these are summed before the encoder's backward runs with them.

Padding: a target key-padding mask is not needed in decoder self-attention: with right-padding the causal mask
already keeps every real target position away from later pads, and pad positions are ignored by the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..kernels import ops
from ..nn import Module, Parameter, TransformerBlock, make_norm, padding_mask
from ..nn import init as nn_init
from .encoder import IGNORE_INDEX, Encoder, EncoderConfig, InputEmbedding, check_common, check_ids, config_from_dict
from .tiers import runs_in_config_tier


@dataclass
class EncoderDecoderConfig:
    """An encoder-decoder Transformer's shape and options.

    src_vocab_size / tgt_vocab_size, max_len (longest source or target with learned positions),
    n_encoder_layer / n_decoder_layer, n_head H, n_embd C, ffn_hidden F (None: 4 C).
    share_embeddings: one token table for source and target (needs equal vocabularies).
    tie_output: the output projection is the target token table, transposed.
    scale_embeddings: multiply token embeddings by sqrt(C) (and initialise them with std C^-0.5), as the paper.
    label_smoothing: of the training loss (0.1 in the paper).
    """

    src_vocab_size: int = 32
    tgt_vocab_size: int = 32
    max_len: int = 64
    n_encoder_layer: int = 2
    n_decoder_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    ffn_hidden: int | None = None
    ffn_kind: str = "gelu"
    norm: str = "layernorm"
    norm_placement: str = "pre"
    positions: str = "learned"
    scale_embeddings: bool = False
    bias: bool = True
    dropout: float = 0.0
    label_smoothing: float = 0.0
    share_embeddings: bool = False
    tie_output: bool = True
    pad_id: int = 0
    attn_impl: str = "plain"
    kernels: str | None = None  # "reference", "fast", or None: follow npformer.set_kernels
    seed: int = 0

    def __post_init__(self):
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.n_embd
        self.validate()

    def validate(self) -> None:
        problems: list[str] = []
        check_common(self, ("src_vocab_size", "tgt_vocab_size", "max_len", "n_encoder_layer", "n_decoder_layer",
                            "n_head", "n_embd", "ffn_hidden"), problems)
        if not problems:
            smallest = min(self.src_vocab_size, self.tgt_vocab_size)
            if not isinstance(self.pad_id, int) or not 0 <= self.pad_id < smallest:
                problems.append(f"pad_id must be a token id of both vocabularies, in [0, {smallest}), "
                                f"got {self.pad_id!r}")
            if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
                problems.append(f"share_embeddings needs equal vocabularies, got src_vocab_size="
                                f"{self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}")
        if not 0.0 <= self.label_smoothing <= 1.0:
            problems.append(f"label_smoothing must be in [0, 1], got {self.label_smoothing}")
        if problems:
            raise ValueError("EncoderDecoderConfig: " + "; ".join(problems))

    def encoder_config(self) -> EncoderConfig:
        """The EncoderConfig of the encoder stack (no heads)."""
        return EncoderConfig(vocab_size=self.src_vocab_size, max_len=self.max_len, n_layer=self.n_encoder_layer,
                             n_head=self.n_head, n_embd=self.n_embd, ffn_hidden=self.ffn_hidden,
                             ffn_kind=self.ffn_kind, norm=self.norm, norm_placement=self.norm_placement,
                             positions=self.positions, scale_embeddings=self.scale_embeddings, bias=self.bias,
                             dropout=self.dropout, pad_id=self.pad_id, mlm_head=False, n_classes=0,
                             attn_impl=self.attn_impl, kernels=self.kernels, seed=self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> "EncoderDecoderConfig":
        return config_from_dict(cls, d, where)

    @classmethod
    def preset(cls, name: str, **overrides) -> "EncoderDecoderConfig":
        """"transformer-base": the paper's base model: post-LN, sinusoidal positions, ReLU FFN, 6 + 6 layers,
        width 512, 8 heads, FFN 2048, dropout 0.1, label smoothing 0.1, one shared 37000-token vocabulary with
        tied embeddings and output projection, embeddings scaled by sqrt(512). Train it with AdamW(betas=(0.9,
        0.98), eps=1e-9, weight_decay=0) and ``npformer.train.schedules.inverse_sqrt(512, warmup_steps=4000)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets are {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update(overrides)
        if "src_vocab_size" in overrides and "tgt_vocab_size" not in overrides and values["share_embeddings"]:
            values["tgt_vocab_size"] = overrides["src_vocab_size"]
        return cls(**values)


PRESETS = {
    "transformer-base": dict(src_vocab_size=37000, tgt_vocab_size=37000, max_len=256, n_encoder_layer=6,
                             n_decoder_layer=6, n_head=8, n_embd=512, ffn_hidden=2048, ffn_kind="relu",
                             norm="layernorm", norm_placement="post", positions="sinusoidal", scale_embeddings=True,
                             bias=True, dropout=0.1, label_smoothing=0.1, share_embeddings=True, tie_output=True),
}


class EncoderDecoder(Module):
    caches = ("_state", "_head_cache")  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, config: EncoderDecoderConfig):
        config.validate()
        self.config = cfg = config
        C = cfg.n_embd
        self.encoder = Encoder(cfg.encoder_config())
        rng = np.random.default_rng([cfg.seed, 1])  # the decoder's own stream, independent of the encoder's
        self.tgt_embed = InputEmbedding(cfg.tgt_vocab_size, C, cfg.max_len, cfg.positions,
                                        scale=C**0.5 if cfg.scale_embeddings else 1.0, dropout=cfg.dropout,
                                        std=C**-0.5 if cfg.scale_embeddings else 0.02, rng=rng,
                                        seed=cfg.seed * 7919 + 2)
        if cfg.share_embeddings:  # one table, two uses: both backward passes add into the same .grad
            self.tgt_embed.tok.weight = self.encoder.embed.tok.weight
        self.dec_blocks = [
            TransformerBlock(C, cfg.n_head, ffn_hidden=cfg.ffn_hidden, ffn_kind=cfg.ffn_kind, norm=cfg.norm,
                             placement=cfg.norm_placement, bias=cfg.bias, dropout=cfg.dropout, causal=True,
                             cross_attention=True, attn_impl=cfg.attn_impl, rng=rng,
                             seed=cfg.seed * 7919 + 5000 + i)
            for i in range(cfg.n_decoder_layer)
        ]
        self.dec_norm_f = make_norm(cfg.norm, C, bias=cfg.bias) if cfg.norm_placement == "pre" else None
        self.out_proj = None if cfg.tie_output else Parameter(nn_init.normal(rng, (C, cfg.tgt_vocab_size)))
        self._state = None
        self.flatten_parameters()  # one buffer for encoder and decoder: AdamW and clipping in a few passes

    # -- helpers ---------------------------------------------------------------------------------------------
    def output_weight(self):
        """The output projection as (C, V): the target table's transpose when tied (a view, no copy)."""
        return self.tgt_embed.tok.weight.data.T if self.out_proj is None else self.out_proj.data

    # -- forward -----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def encode(self, src):
        """src (B, S) -> (memory (B, S, C), context mask (B, 1, 1, S), True at real source tokens)."""
        src = check_ids("EncoderDecoder", src, self.config.src_vocab_size, like=self.tgt_embed.tok.weight.data)
        memory = self.encoder.hidden_states(src)
        return memory, padding_mask(src != self.config.pad_id)

    @runs_in_config_tier
    def decode(self, tgt_in, memory=None, context_mask=None, context_kv=None, pos_offset: int = 0,
               kv_caches=None):
        """tgt_in (B, T) -> logits (B, T, V), attending to the encoder output.

        memory / context_mask: from ``encode``. For decoding, context_kv (one (k, v) per decoder layer, from each
        block's ``cross.project_context(memory)``) replaces memory, and pos_offset / kv_caches (one per layer,
        with ``update(k, v)``) let a call feed only the newest token(s).
        """
        tgt_in = check_ids("EncoderDecoder", tgt_in, self.config.tgt_vocab_size, like=self.tgt_embed.tok.weight.data)
        y = self.tgt_embed.forward(tgt_in, pos_offset=pos_offset)
        for i, block in enumerate(self.dec_blocks):
            y = block.forward(y, context=memory, context_mask=context_mask,
                              context_kv=None if context_kv is None else context_kv[i],
                              kv_cache=None if kv_caches is None else kv_caches[i])
        if self.dec_norm_f is not None:
            y = self.dec_norm_f.forward(y)
        logits, self._head_cache = ops.linear_forward(y, self.output_weight())
        return logits

    @runs_in_config_tier
    def forward(self, src, tgt_in):
        """src (B, S), tgt_in (B, T) -> logits (B, T, V) (teacher forcing)."""
        memory, cmask = self.encode(src)
        return self.decode(tgt_in, memory, cmask)

    @runs_in_config_tier
    def loss(self, src, tgt_in, tgt_out, label_smoothing: float | None = None):
        """Mean (label-smoothed) cross-entropy of forward(src, tgt_in) against tgt_out (B, T); positions where
        tgt_out is pad_id (or -100) are ignored. Returns a 0-d array; call ``backward()`` next."""
        if getattr(tgt_out, "shape", None) != tgt_in.shape:
            raise ValueError(f"EncoderDecoder: tgt_out shape {getattr(tgt_out, 'shape', None)} != tgt_in shape "
                             f"{tgt_in.shape}")
        eps = self.config.label_smoothing if label_smoothing is None else label_smoothing
        logits = self.forward(src, tgt_in)
        xp = backend.array_module(tgt_out)
        targets = xp.where(tgt_out == self.config.pad_id, IGNORE_INDEX, tgt_out.astype(xp.int64))  # uint ids: no wrap
        loss, cache = ops.cross_entropy_forward(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=eps)
        self._state = cache
        return loss

    # -- backward ----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def backward(self, dloss: float = 1.0) -> None:
        """Add d(dloss * loss)/d(param) into every parameter's .grad: the forward of ``loss`` upside down."""
        if self._state is None:
            raise RuntimeError("EncoderDecoder.backward: call loss(src, tgt_in, tgt_out) first")
        cache, self._state = self._state, None
        # loss = CE(y @ W_out, targets)
        dlogits = ops.cross_entropy_backward(dloss, cache)
        dy, dw_out, _ = ops.linear_backward(dlogits, self._head_cache)
        self._head_cache = None
        if self.out_proj is None:
            self.tgt_embed.tok.weight.grad += dw_out.T  # tied: the projection's gradient lands on the table
        else:
            self.out_proj.grad += dw_out
        # y = norm_f(y)
        if self.dec_norm_f is not None:
            dy = self.dec_norm_f.backward(dy)
        # y = block_l(y, memory), l = L..1: memory feeds every block's cross-attention, so its gradients add up
        dmemory = None
        for block in reversed(self.dec_blocks):
            dy, dctx = block.backward(dy)
            dmemory = dctx if dmemory is None else dmemory + dctx
        # y = drop(wte_tgt[tgt_in] * s + pos)
        self.tgt_embed.backward(dy)
        # memory = encoder(src)
        self.encoder.backward_hidden(dmemory)
