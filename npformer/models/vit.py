"""A Vision Transformer (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words"): an image cut into patches, the
patches read as tokens by the Encoder's bidirectional blocks, a class token's final state classified.

Shapes: images (B, C_in, H, W) (or (B, H, W) for one channel); p the patch size; N = (H/p)(W/p) patches;
P = C_in p p; T = N + 1 tokens (the class token first); C = n_embd; K classes.

forward:   patches = patchify(images)                       (B, N, P)      npformer.functional.patches
           e = patches @ W_patch + b_patch                  (B, N, C)      a Linear: the patch embedding
           x = drop(concat([cls, e], axis=1) + pos[0:T])   (B, T, C)      cls: one learned (C,) row for every image
           x = block_l(x) for l = 1..L;  x = norm_f(x)       (pre-LN only)  the Encoder's TransformerBlocks, no mask
           pooled = x[:, 0] ("first": the class token)  |  mean over the T tokens ("mean")
           logits = pooled @ W_head + b_head                (B, K);        loss = CE(logits, labels)
backward:  the same lines, read from the bottom up (``backward_hidden``); the class token's gradient is the sum
           over the batch of dx[:, 0], the position table's the sum over the batch of dx, and the images' gradient
           comes back through the Linear and the patchify permutation.

Built from the existing layers: Linear, Embedding (the position table), Dropout, TransformerBlock, make_norm, the
Encoder's pooling, and the reference patchify pair; only the class token is a bare Parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..functional.patches import check_patch_size, patches_backward, patches_forward
from ..kernels import ops
from ..nn import Dropout, Embedding, Linear, Module, Parameter, TransformerBlock, make_norm
from ..nn import init as nn_init
from .encoder import (
    ATTENTION_IMPLS,
    FFN_KINDS,
    NORMS,
    PLACEMENTS,
    POOLINGS,
    config_from_dict,
    pool_backward,
    pool_forward,
)
from .tiers import check_kernels_field, runs_in_config_tier


@dataclass
class ViTConfig:
    """A ViT's shape and options.

    image_size H = W, patch_size p (dividing it), in_channels C_in, n_classes K; n_layer L, n_head H, n_embd C,
    ffn_hidden F (None: 4 C). pooling: "first" (the class token, as in the paper) or "mean" (of every token).
    """

    image_size: int = 8
    patch_size: int = 4
    in_channels: int = 1
    n_classes: int = 10
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 64
    ffn_hidden: int | None = None
    ffn_kind: str = "gelu"
    norm: str = "layernorm"
    norm_placement: str = "pre"
    bias: bool = True
    dropout: float = 0.0
    pooling: str = "first"
    attn_impl: str = "plain"
    kernels: str | None = None  # "reference", "fast", or None: follow npformer.set_kernels
    seed: int = 0

    def __post_init__(self):
        if self.ffn_hidden is None and isinstance(self.n_embd, int):
            self.ffn_hidden = 4 * self.n_embd
        self.validate()

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self) -> None:
        problems: list[str] = []
        for name in ("image_size", "patch_size", "in_channels", "n_classes", "n_layer", "n_head", "n_embd",
                     "ffn_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not problems:
            if self.image_size % self.patch_size:
                problems.append(f"patch_size={self.patch_size} does not divide image_size={self.image_size}")
            if self.n_embd % self.n_head:
                problems.append(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        for name, allowed in (("ffn_kind", FFN_KINDS), ("norm", NORMS), ("norm_placement", PLACEMENTS),
                              ("pooling", POOLINGS), ("attn_impl", ATTENTION_IMPLS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        check_kernels_field(self.kernels, problems)
        if problems:
            raise ValueError("ViTConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> "ViTConfig":
        return config_from_dict(cls, d, where)


class PatchEmbedding(Module):
    """images (B, C_in, H, W) -> (B, N, C): patchify (a permutation of the pixels) then one Linear (P -> C).

    Equal to a Conv2d(C_in, C, kernel_size=p, stride=p) whose weight is ``linear.weight.T.reshape(C, C_in, p, p)``.
    """

    caches = ("_cache",)

    def __init__(self, patch_size: int, in_channels: int, dim: int, bias: bool = True, rng=None):
        self.patch_size = patch_size
        self.linear = Linear(in_channels * patch_size * patch_size, dim, bias=bias, rng=rng)
        self._cache = None

    def forward(self, images):
        patches, self._cache = patches_forward(images, self.patch_size)  # (B, N, P)
        return self.linear.forward(patches)  # (B, N, C)

    def backward(self, dy):
        """dy (B, N, C) -> dimages (B, C_in, H, W)."""
        # e = patches @ W + b;  patches = patchify(images)
        dimages = patches_backward(self.linear.backward(dy), self._cache)
        self._cache = None
        return dimages


class ViT(Module):
    caches = ("_state", "_pool_cache")  # what forward keeps for backward (the layers keep their own)

    def __init__(self, config: ViTConfig):
        config.validate()
        self.config = cfg = config
        rng = nn_init.as_rng(cfg.seed)
        C, T = cfg.n_embd, cfg.n_patches + 1
        self.patch = PatchEmbedding(cfg.patch_size, cfg.in_channels, C, bias=cfg.bias, rng=rng)
        self.cls_token = Parameter(nn_init.normal(rng, (C,), 0.02), no_decay=True)  # one row, shared by all images
        self.pos = Embedding(T, C, rng=rng)  # learned positions: the class token's, then each patch's
        self.drop = Dropout(cfg.dropout, seed=cfg.seed * 7919 + 1)
        self.blocks = [
            TransformerBlock(C, cfg.n_head, ffn_hidden=cfg.ffn_hidden, ffn_kind=cfg.ffn_kind, norm=cfg.norm,
                             placement=cfg.norm_placement, bias=cfg.bias, dropout=cfg.dropout, causal=False,
                             attn_impl=cfg.attn_impl, rng=rng, seed=cfg.seed * 7919 + 10 + i)
            for i in range(cfg.n_layer)
        ]
        # post-LN blocks end in a norm already; pre-LN stacks need one at the end
        self.norm_f = make_norm(cfg.norm, C, bias=cfg.bias) if cfg.norm_placement == "pre" else None
        self.head = Linear(C, cfg.n_classes, rng=rng)
        self._state = None
        self._pool_cache = None
        self.flatten_parameters()  # one buffer: AdamW and clipping in a few passes (see GPT)

    # -- inputs ------------------------------------------------------------------------------------------------
    def check_images(self, images):
        """images (B, C_in, H, W), or (B, H, W) with one channel; host or device, any real dtype -> the model's
        backend and dtype, 4-D."""
        cfg = self.config
        shape = tuple(getattr(images, "shape", ()))
        dtype = getattr(images, "dtype", None)
        if dtype is None or dtype.kind not in "fiub":
            raise TypeError(f"ViT: images must be a real array (B, C_in, H, W), got {type(images).__name__}"
                            + ("" if dtype is None else f" of dtype {dtype}"))
        if len(shape) == 3 and cfg.in_channels == 1:
            shape = (shape[0], 1) + shape[1:]
        want = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if len(shape) != 4 or shape[1:] != want or shape[0] < 1:
            raise ValueError(f"ViT: images must be (B, {', '.join(map(str, want))})"
                             f"{' or (B, H, W)' if cfg.in_channels == 1 else ''}, got shape {tuple(images.shape)}")
        check_patch_size("ViT", shape, cfg.patch_size)
        like = self.head.weight.data
        images = backend.to_backend_of(images, like).reshape(shape)
        return images if images.dtype == like.dtype else images.astype(like.dtype)

    # -- forward -----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def hidden_states(self, images):
        """images (B, C_in, H, W) -> hidden states (B, T, C), T = N + 1 (the class token first). Caches for backward."""
        images = self.check_images(images)
        e = self.patch.forward(images)  # (B, N, C)
        B, N, C = e.shape
        xp = backend.array_module(e)
        x = xp.empty((B, N + 1, C), dtype=e.dtype)
        x[:, 0] = self.cls_token.data  # the class token, the same row for every image
        x[:, 1:] = e
        x = self.drop.forward(x + self.pos.forward(xp.arange(N + 1, dtype=np.int64)))
        for block in self.blocks:
            x = block.forward(x)  # bidirectional: every token sees every token, no mask
        if self.norm_f is not None:
            x = self.norm_f.forward(x)
        return x

    forward = hidden_states

    @runs_in_config_tier
    def backward_hidden(self, dx):
        """dx (B, T, C), the gradient of the hidden states -> dimages (B, C_in, H, W); parameter gradients added."""
        # x = norm_f(x)
        if self.norm_f is not None:
            dx = self.norm_f.backward(dx)
        # x = block_l(x), l = L..1
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        # x = drop(concat([cls, e]) + pos[0:T])
        dx = self.drop.backward(dx)
        self.pos.backward(dx.sum(axis=0))  # one position row serves every image of the batch
        self.cls_token.grad += dx[:, 0].sum(axis=0)  # one class token serves every image too
        # e = patch_embedding(images)
        return self.patch.backward(dx[:, 1:])

    @runs_in_config_tier
    def classify(self, images):
        """images -> class logits (B, K) from the pooled hidden states."""
        x = self.hidden_states(images)
        xp = backend.array_module(x)
        valid = xp.ones(x.shape[:2], dtype=bool)  # every token is real: no padding in an image
        pooled, self._pool_cache = pool_forward(x, valid, self.config.pooling)
        return self.head.forward(pooled)

    @runs_in_config_tier
    def loss(self, images, labels, label_smoothing: float = 0.0):
        """Mean cross-entropy of classify(images) against labels (B,) in [0, K), host or device. Call
        ``backward()`` next."""
        B = getattr(images, "shape", (None,))[0]
        if getattr(labels, "shape", None) != (B,):
            raise ValueError(f"ViT: labels must have shape ({B},), got {getattr(labels, 'shape', None)}")
        logits = self.classify(images)
        labels = backend.to_backend_of(labels, logits)
        loss, self._state = ops.cross_entropy_forward(logits, labels, label_smoothing=label_smoothing)
        return loss

    classify_loss = loss  # the Encoder's name for it

    # -- backward ----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def backward(self, dloss: float = 1.0):
        """Add d(dloss * loss)/d(param) into every parameter's .grad after ``loss``; returns dloss/dimages
        (B, C_in, H, W)."""
        if self._state is None:
            raise RuntimeError("ViT.backward: call loss(images, labels) first")
        cache, self._state = self._state, None
        # loss = CE(logits);  logits = pooled @ W_head + b_head;  pooled = pool(x)
        dlogits = ops.cross_entropy_backward(dloss, cache)
        dx = pool_backward(self.head.backward(dlogits), self._pool_cache)
        self._pool_cache = None
        return self.backward_hidden(dx)
