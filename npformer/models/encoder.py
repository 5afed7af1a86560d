"""Encoder: a BERT-style bidirectional Transformer (no causal mask) over padded batches, with a masked-language-
modelling head and a sequence-classification head, its backward written out.

Shapes: ids (B, T) integer token ids, pad_id at padding (anywhere, usually on the right); C = n_embd;
V vocabulary; K classes.

forward:   valid = ids != pad_id  (B, T);  key mask = valid (B, 1, 1, T): no query looks at a padding key
           x = drop(wte[ids] * s + pos[0:T])           s = sqrt(C) with scale_embeddings, else 1
           x = block_l(x, key mask) for l = 1..L;  x = norm_f(x) (pre-LN only)
mlm:       logits = x @ wte^T + b_mlm  (B, T, V);  loss = CE(logits, targets), targets -100 where not masked
classify:  pooled = x[:, 0] ("first", a [CLS] token)  |  sum_t valid x / sum_t valid ("mean", real tokens only)
           logits = pooled @ W_cls + b_cls  (B, K);  loss = CE(logits, labels)
backward:  the same lines, read from the bottom up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import backend
from ..config_dicts import checked_fields
from ..kernels import ops
from ..nn import (
    Dropout,
    Embedding,
    Linear,
    Module,
    Parameter,
    SinusoidalTable,
    TransformerBlock,
    make_norm,
    padding_mask,
)
from ..nn import init as nn_init
from .config import FIELDS_ADDED_LATER
from .tiers import check_kernels_field, runs_in_config_tier

FFN_KINDS = ("relu", "gelu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
PLACEMENTS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal")
POOLINGS = ("first", "mean")
ATTENTION_IMPLS = ("plain", "flash")
IGNORE_INDEX = -100


def check_common(cfg, int_fields, problems: list) -> None:
    """Validation shared by EncoderConfig and EncoderDecoderConfig: positive sizes, divisibility, choices."""
    for name in int_fields:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if not problems and cfg.n_embd % cfg.n_head:
        problems.append(f"n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}")
    for name, allowed in (("ffn_kind", FFN_KINDS), ("norm", NORMS), ("norm_placement", PLACEMENTS),
                          ("positions", POSITIONS), ("attn_impl", ATTENTION_IMPLS)):
        if getattr(cfg, name) not in allowed:
            problems.append(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        problems.append(f"dropout must be in [0, 1), got {cfg.dropout}")
    check_kernels_field(cfg.kernels, problems)


def config_from_dict(cls, d: dict, where: str | None = None):
    """Build a config dataclass from a dict (a checkpoint's), every field checked first (npformer.config_dicts)."""
    return cls(**checked_fields(cls, d, where or cls.__name__, optional=FIELDS_ADDED_LATER))


@dataclass
class EncoderConfig:
    """A bidirectional encoder's shape and options.

    vocab_size V, max_len T_max (longest input with learned positions), n_layer L, n_head H, n_embd C,
    ffn_hidden F (None: 4 C). pad_id marks padding (masked out of attention, pooling and the MLM loss).
    mlm_head: add the masked-LM head (tied to the token embeddings, plus an output bias).
    n_classes K > 0 adds a classification head over the pooled sequence ("first" token or "mean" of real tokens).
    scale_embeddings: multiply token embeddings by sqrt(C), as "Attention Is All You Need" does (their init std
    is then C^-0.5, so the scaled rows have unit size).
    """

    vocab_size: int = 32
    max_len: int = 64
    n_layer: int = 2
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
    pad_id: int = 0
    mlm_head: bool = True
    n_classes: int = 0
    pooling: str = "first"
    attn_impl: str = "plain"
    kernels: str | None = None  # "reference", "fast", or None: follow npformer.set_kernels
    seed: int = 0

    def __post_init__(self):
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.n_embd
        self.validate()

    def validate(self) -> None:
        problems: list[str] = []
        check_common(self, ("vocab_size", "max_len", "n_layer", "n_head", "n_embd", "ffn_hidden"), problems)
        if not isinstance(self.pad_id, int) or not 0 <= self.pad_id < (self.vocab_size or 1):
            problems.append(f"pad_id must be a token id in [0, vocab_size={self.vocab_size}), got {self.pad_id!r}")
        if not isinstance(self.n_classes, int) or self.n_classes < 0:
            problems.append(f"n_classes must be a non-negative integer, got {self.n_classes!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if problems:
            raise ValueError("EncoderConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> "EncoderConfig":
        return config_from_dict(cls, d, where)


def check_ids(op: str, ids, vocab_size: int, like):
    """ids must be a (B, T) integer array of token ids in [0, vocab_size); returns them on ``like``'s backend.

    Host ids are range-checked (free) and uploaded; ids already on the device are not range-checked (that would
    cost a device sync per call, and CuPy wraps a bad id silently)."""
    if getattr(ids, "ndim", None) != 2:
        raise ValueError(f"{op}: ids must be a (B, T) integer array, got shape {getattr(ids, 'shape', None)}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must hold integer token ids, got dtype {ids.dtype}")
    if ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(f"{op}: ids must be non-empty, got shape {tuple(ids.shape)}")
    if backend.on_host(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{op}: token id {lo if lo < 0 else hi} is out of range for vocab_size={vocab_size}")
    return backend.to_backend_of(ids, like)


# ---------------------------------------------------------------------------------------------------------------
# input embedding: tokens (optionally scaled) + positions, then dropout
# ---------------------------------------------------------------------------------------------------------------
class InputEmbedding(Module):
    """x = drop(wte[ids] * scale + pos[offset : offset + T]).  ids (B, T) -> x (B, T, C).

    positions "learned" (a (T_max, C) table) or "sinusoidal" (fixed, no parameters). The token table ``tok``
    may be shared with another InputEmbedding (assign its ``tok.weight``): gradients add up in one ``.grad``.
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int, positions: str = "learned", scale: float = 1.0,
                 dropout: float = 0.0, std: float = 0.02, rng=None, seed: int = 0):
        rng = nn_init.as_rng(rng)
        self.tok = Embedding(vocab_size, dim, std=std, rng=rng)
        self.pos = Embedding(max_len, dim, rng=rng) if positions == "learned" else None
        self.positions, self.max_len, self.dim, self.scale = positions, max_len, dim, float(scale)
        self.drop = Dropout(dropout, seed=seed)
        self.sinusoid = SinusoidalTable(dim, min_len=max_len)

    def forward(self, ids, pos_offset: int = 0):
        T = ids.shape[1]
        if self.pos is not None and pos_offset + T > self.max_len:
            raise ValueError(f"embedding: positions up to {pos_offset + T} exceed max_len={self.max_len} of the "
                             "learned position table")
        x = self.tok.forward(ids)  # (B, T, C)
        if self.scale != 1.0:
            x = x * self.scale
        if self.pos is not None:
            xp = backend.array_module(x)
            x = x + self.pos.forward(xp.arange(pos_offset, pos_offset + T, dtype=np.int64))
        else:
            x = x + self.sinusoid.rows(pos_offset, pos_offset + T, x.dtype)
        return self.drop.forward(x)

    def backward(self, dx) -> None:
        # x = drop(wte[ids] * scale + pos[t])
        dx = self.drop.backward(dx)
        if self.pos is not None:
            self.pos.backward(dx.sum(axis=0))  # one position row serves every sequence in the batch
        self.tok.backward(dx * self.scale if self.scale != 1.0 else dx)


# ---------------------------------------------------------------------------------------------------------------
# pooling for classification
# ---------------------------------------------------------------------------------------------------------------
class PoolCache(NamedTuple):
    kind: str
    weights: object  # (B, T) in x's dtype: valid / count for "mean"; None for "first"
    shape: tuple  # x's shape (B, T, C)


def pool_forward(x, valid, kind: str):
    """x (B, T, C), valid (B, T) bool -> pooled (B, C): x[:, 0] ("first") or the mean over valid positions."""
    if kind == "first":
        return x[:, 0], PoolCache(kind, None, tuple(x.shape))
    xp = backend.array_module(x)
    count = xp.maximum(valid.sum(axis=1, keepdims=True), 1).astype(x.dtype)  # (B, 1); an all-pad row: 0 / 1
    weights = valid.astype(x.dtype) / count  # (B, T)
    return (x * weights[:, :, None]).sum(axis=1), PoolCache(kind, weights, tuple(x.shape))


def pool_backward(dpooled, cache: PoolCache):
    """dpooled (B, C) -> dx (B, T, C)."""
    xp = backend.array_module(dpooled)
    if cache.kind == "first":
        # pooled = x[:, 0]: only the first position receives gradient
        dx = xp.zeros(cache.shape, dtype=dpooled.dtype)
        dx[:, 0] = dpooled
        return dx
    # pooled[b] = sum_t weights[b, t] x[b, t]  =>  dx[b, t] = weights[b, t] dpooled[b]
    return cache.weights[:, :, None] * dpooled[:, None, :]


# ---------------------------------------------------------------------------------------------------------------
# masked-language-modelling inputs
# ---------------------------------------------------------------------------------------------------------------
def mask_tokens(ids, mask_id: int, vocab_size: int, rng, pad_id: int | None = None, special_ids=(),
                mask_prob: float = 0.15):
    """BERT's masking recipe: pick each ordinary token with probability mask_prob (15%); of the picked, replace
    80% by mask_id, 10% by a random ordinary token, and leave 10% unchanged.

    ids: (B, T) integer. Ordinary tokens are those not equal to pad_id, mask_id or any of special_ids; pads and
    specials are never picked, and random replacements are drawn uniformly from the ordinary vocabulary.
    rng: a seed (int), a ``backend.Generator``, or a NumPy Generator: the same seed gives the same masking.
    Returns (inputs, targets), both (B, T) int64: targets hold the original id at picked positions and
    IGNORE_INDEX (-100) elsewhere, ready for ``Encoder.mlm_loss(inputs, targets)``.
    """
    if getattr(ids, "ndim", None) != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"mask_tokens: ids must be a (B, T) integer array, got {getattr(ids, 'shape', ids)!r}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_tokens: mask_prob must be in [0, 1], got {mask_prob}")
    special = {int(mask_id), *(int(s) for s in special_ids)} | (set() if pad_id is None else {int(pad_id)})
    ordinary = np.array([v for v in range(vocab_size) if v not in special], dtype=np.int64)
    if ordinary.size == 0:
        raise ValueError(f"mask_tokens: every id of vocab_size={vocab_size} is special; nothing can be masked")
    xp = backend.array_module(ids)
    if isinstance(rng, (int, np.integer)):  # a seed: draw where the ids live
        rng = backend.Generator(int(rng), backend="numpy" if xp is np else "cupy")
    ids = ids.astype(np.int64)
    shape = tuple(ids.shape)
    # draws are made on the generator's side and moved to the ids' side at this edge
    pick_u = backend.to_backend_of(rng.random(shape, dtype=np.float64), ids)
    how_u = backend.to_backend_of(rng.random(shape, dtype=np.float64), ids)
    draws = backend.to_backend_of(rng.integers(0, ordinary.size, shape), ids)
    random_ids = backend.to_backend_of(ordinary, ids)[draws]
    is_ordinary = xp.ones(shape, dtype=bool)
    for s in special:
        is_ordinary &= ids != s
    picked = is_ordinary & (pick_u < mask_prob)
    to_mask = picked & (how_u < 0.8)
    to_random = picked & (how_u >= 0.8) & (how_u < 0.9)
    inputs = xp.where(to_mask, mask_id, xp.where(to_random, random_ids, ids)).astype(np.int64)
    targets = xp.where(picked, ids, IGNORE_INDEX).astype(np.int64)
    return inputs, targets


# ---------------------------------------------------------------------------------------------------------------
# the encoder
# ---------------------------------------------------------------------------------------------------------------
class Encoder(Module):
    caches = ("_state", "_valid", "_head_cache", "_pool_cache")  # what forward keeps for backward

    def __init__(self, config: EncoderConfig):
        config.validate()
        self.config = cfg = config
        rng = nn_init.as_rng(cfg.seed)
        C = cfg.n_embd
        self.embed = InputEmbedding(cfg.vocab_size, C, cfg.max_len, cfg.positions,
                                    scale=C**0.5 if cfg.scale_embeddings else 1.0, dropout=cfg.dropout,
                                    std=C**-0.5 if cfg.scale_embeddings else 0.02, rng=rng,
                                    seed=cfg.seed * 7919 + 1)
        self.blocks = [
            TransformerBlock(C, cfg.n_head, ffn_hidden=cfg.ffn_hidden, ffn_kind=cfg.ffn_kind, norm=cfg.norm,
                             placement=cfg.norm_placement, bias=cfg.bias, dropout=cfg.dropout, causal=False,
                             attn_impl=cfg.attn_impl, rng=rng, seed=cfg.seed * 7919 + 10 + i)
            for i in range(cfg.n_layer)
        ]
        # post-LN blocks end in a norm already; pre-LN stacks need one at the end
        self.norm_f = make_norm(cfg.norm, C, bias=cfg.bias) if cfg.norm_placement == "pre" else None
        self.mlm_bias = Parameter(nn_init.zeros((cfg.vocab_size,))) if cfg.mlm_head else None
        self.cls_head = Linear(C, cfg.n_classes, rng=rng) if cfg.n_classes > 0 else None
        self._state = None
        self._valid = None
        self.flatten_parameters()  # one buffer: AdamW and clipping in a few passes (see GPT)

    # -- forward -----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def hidden_states(self, ids):
        """ids (B, T) -> hidden states (B, T, C), padding masked out of every attention. Caches for backward."""
        ids = check_ids("Encoder", ids, self.config.vocab_size, like=self.embed.tok.weight.data)
        valid = ids != self.config.pad_id  # (B, T)
        mask = padding_mask(valid)  # (B, 1, 1, T): queries never look at padding keys
        x = self.embed.forward(ids)
        for block in self.blocks:
            x = block.forward(x, mask=mask)
        if self.norm_f is not None:
            x = self.norm_f.forward(x)
        self._valid = valid
        return x

    forward = hidden_states

    @runs_in_config_tier
    def backward_hidden(self, dx) -> None:
        """dx (B, T, C), the gradient of the hidden states -> parameter gradients (the stack upside down)."""
        # x = norm_f(x)
        if self.norm_f is not None:
            dx = self.norm_f.backward(dx)
        # x = block_l(x), l = L..1
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        # x = drop(wte[ids] * s + pos)
        self.embed.backward(dx)

    @runs_in_config_tier
    def mlm_logits(self, ids):
        """ids (B, T) -> logits (B, T, V) of the MLM head: hidden @ wte^T + b_mlm."""
        if self.mlm_bias is None:
            raise RuntimeError("Encoder: this encoder has no MLM head (mlm_head=False)")
        x = self.hidden_states(ids)
        logits, self._head_cache = ops.linear_forward(x, self.embed.tok.weight.data.T, self.mlm_bias.data)
        return logits

    @runs_in_config_tier
    def mlm_loss(self, ids, targets, ignore_index: int = IGNORE_INDEX):
        """Masked-LM loss: mean cross-entropy over positions whose target is not ignore_index (see mask_tokens).
        ids, targets: (B, T). Returns a 0-d array; call ``backward()`` next."""
        if getattr(targets, "shape", None) != ids.shape:
            raise ValueError(f"Encoder: targets shape {getattr(targets, 'shape', None)} != ids shape {ids.shape}")
        logits = self.mlm_logits(ids)
        loss, cache = ops.cross_entropy_forward(logits, targets, ignore_index=ignore_index)
        self._state = ("mlm", cache)
        return loss

    @runs_in_config_tier
    def classify(self, ids):
        """ids (B, T) -> class logits (B, K) from the pooled hidden states."""
        if self.cls_head is None:
            raise RuntimeError("Encoder: this encoder has no classification head (n_classes=0)")
        x = self.hidden_states(ids)
        pooled, self._pool_cache = pool_forward(x, self._valid, self.config.pooling)
        return self.cls_head.forward(pooled)

    @runs_in_config_tier
    def classify_loss(self, ids, labels, label_smoothing: float = 0.0):
        """Mean cross-entropy of classify(ids) against labels (B,) in [0, K). Call ``backward()`` next."""
        if getattr(labels, "shape", None) != ids.shape[:1]:
            raise ValueError(f"Encoder: labels must have shape ({ids.shape[0]},), got {getattr(labels, 'shape', None)}")
        logits = self.classify(ids)
        loss, cache = ops.cross_entropy_forward(logits, labels, label_smoothing=label_smoothing)
        self._state = ("cls", cache)
        return loss

    # -- backward ----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def backward(self, dloss: float = 1.0) -> None:
        """Add d(dloss * loss)/d(param) into every parameter's .grad, after mlm_loss or classify_loss."""
        if self._state is None:
            raise RuntimeError("Encoder.backward: call mlm_loss(ids, targets) or classify_loss(ids, labels) first")
        kind, cache = self._state
        self._state = None
        dlogits = ops.cross_entropy_backward(dloss, cache)
        if kind == "mlm":
            # logits = x @ wte^T + b_mlm: the head's weight gradient lands on the (tied) token table
            dx, dw_head, db = ops.linear_backward(dlogits, self._head_cache)
            self._head_cache = None
            self.embed.tok.weight.grad += dw_head.T
            self.mlm_bias.grad += db
        else:
            # logits = pooled @ W_cls + b_cls;  pooled = pool(x)
            dx = pool_backward(self.cls_head.backward(dlogits), self._pool_cache)
            self._pool_cache = None
        self.backward_hidden(dx)
