"""The Transformer block: attention, optional cross-attention, feed-forward, each on a residual branch.

The feed-forward is a FeedForward, or with ffn_kind="moe" a mixture of experts (MoEFeedForward, its options in
``moe``); the self-attention may be a sliding window (``window``: each query sees the last ``window`` keys).

pre-LN  (GPT-2, Llama):           x = x + attn(norm1(x));  [x = x + cross(norm_c(x), ctx)];  x = x + ffn(norm2(x))
post-LN (the original Transformer): x = norm1(x + attn(x)); [x = norm_c(x + cross(x, ctx))]; x = norm2(x + ffn(x))

Dropout (when p > 0 and training) sits on each branch's output, before the residual sum.
x: (B, T, C) -> (B, T, C); context: (B, S, C) for a block with cross-attention.
"""

from __future__ import annotations

from .attention import MultiHeadAttention
from .dropout import Dropout
from .feedforward import FeedForward
from .module import Module
from .moe import MoEFeedForward
from .norms import make_norm

PLACEMENTS = ("pre", "post")


class TransformerBlock(Module):
    caches = ("_cache_inputs",)  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, dim: int, n_head: int, n_kv_head: int | None = None, ffn_hidden: int | None = None,
                 ffn_kind: str = "gelu", norm: str = "layernorm", placement: str = "pre", bias: bool = True,
                 dropout: float = 0.0, causal: bool = False, rope: bool = False, rope_base: float = 10000.0,
                 cross_attention: bool = False, proj_std: float = 0.02, attn_impl: str = "plain", rng=None,
                 seed: int = 0, recompute: bool = False, gelu_approximate: str = "tanh",
                 norm_eps: float | None = None, window: int | None = None, moe: dict | None = None):
        if placement not in PLACEMENTS:
            raise ValueError(f"block: norm placement must be one of {PLACEMENTS}, got {placement!r}")
        self.placement, self.causal, self.has_cross = placement, causal, cross_attention
        self.recompute = recompute
        self._cache_inputs = None
        # inspection only (npformer.inspect sets it for one forward): a callable given the block's input, its
        # output and each norm's (name, input, output). None in training: one check per forward.
        self.capture = None
        self.norm1 = make_norm(norm, dim, bias=bias, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, n_head, n_kv_head, bias=bias, rope=rope, rope_base=rope_base,
                                       proj_std=proj_std, rng=rng, impl=attn_impl, window=window)
        self.drop1 = Dropout(dropout, seed=seed * 3 + 1)
        if cross_attention:
            self.norm_c = make_norm(norm, dim, bias=bias, eps=norm_eps)
            self.cross = MultiHeadAttention(dim, n_head, n_kv_head, bias=bias, cross=True, proj_std=proj_std,
                                            rng=rng, impl=attn_impl)
            self.drop_c = Dropout(dropout, seed=seed * 3 + 2)
        self.norm2 = make_norm(norm, dim, bias=bias, eps=norm_eps)
        if ffn_kind == "moe":  # moe: n_experts, top_k, kind (the experts'), router, capacity_factor, loss coefs
            self.ffn = MoEFeedForward(dim, ffn_hidden or 4 * dim, bias=bias, proj_std=proj_std, rng=rng,
                                      gelu_approximate=gelu_approximate, **(moe or {}))
        else:
            if moe:
                raise ValueError(f"block: moe options {sorted(moe)} need ffn_kind='moe', got {ffn_kind!r}")
            self.ffn = FeedForward(dim, ffn_hidden or 4 * dim, kind=ffn_kind, bias=bias, proj_std=proj_std,
                                   rng=rng, gelu_approximate=gelu_approximate)
        self.drop2 = Dropout(dropout, seed=seed * 3 + 3)

    def forward(self, x, mask=None, positions=None, context=None, context_mask=None, kv_cache=None,
                context_kv=None):
        """x: (B, T, C) -> (B, T, C). mask: self-attention mask (the block adds causality itself when causal);
        context / context_mask / context_kv: cross-attention's input, its key mask, or its precomputed keys.

        With ``recompute`` (activation recomputation), only the inputs are kept: every cache of the sub-layers is
        dropped right after the forward and rebuilt by running the forward again at the start of backward.
        """
        inputs = dict(x=x, mask=mask, positions=positions, context=context, context_mask=context_mask,
                      kv_cache=kv_cache, context_kv=context_kv)
        y = self._forward(**inputs)
        if self.recompute and kv_cache is None:
            self.drop_caches()
            self._cache_inputs = inputs
        return y

    def _forward(self, x, mask, positions, context, context_mask, kv_cache, context_kv):
        def self_attn(h):
            return self.attn.forward(h, mask=mask, causal=self.causal, positions=positions, kv_cache=kv_cache)

        def cross_attn(h):
            return self.cross.forward(h, context=context, mask=context_mask, context_kv=context_kv)

        # x1, x2, x3 name the residual stream after each branch; backward's comments refer to them. ``norms``
        # pairs each norm's input and output, for ``capture`` alone.
        if self.placement == "pre":
            h1 = self.norm1.forward(x)
            x1 = x + self.drop1.forward(self_attn(h1))
            hc = self.norm_c.forward(x1) if self.has_cross else None
            x2 = x1 + self.drop_c.forward(cross_attn(hc)) if self.has_cross else x1
            h2 = self.norm2.forward(x2)
            x3 = x2 + self.drop2.forward(self.ffn.forward(h2))
            norms = (("norm1", x, h1), ("norm_c", x1, hc), ("norm2", x2, h2))
        else:
            s1 = x + self.drop1.forward(self_attn(x))
            x1 = self.norm1.forward(s1)
            sc = x1 + self.drop_c.forward(cross_attn(x1)) if self.has_cross else None
            x2 = self.norm_c.forward(sc) if self.has_cross else x1
            s2 = x2 + self.drop2.forward(self.ffn.forward(x2))
            x3 = self.norm2.forward(s2)
            norms = (("norm1", s1, x1), ("norm_c", sc, x2), ("norm2", s2, x3))
        if self.capture is not None:
            self.capture(x, x3, [norm for norm in norms if self.has_cross or norm[0] != "norm_c"])
        return x3

    def backward(self, dy):
        """dy: (B, T, C) -> dx (B, T, C), or (dx, dcontext) for a block with cross-attention.

        The forward upside down: each residual sum x + f(x) sends its gradient both straight through and
        through f, and the two are added."""
        if self._cache_inputs is not None:
            # recomputation: the same forward again, with the same dropout masks, to rebuild the caches
            for m in self.modules():
                if isinstance(m, Dropout):
                    m.replay_last()
            inputs, self._cache_inputs = self._cache_inputs, None
            self._forward(**inputs)
        dcontext = None
        dx3 = dy
        if self.placement == "pre":
            # x3 = x2 + drop2(ffn(norm2(x2)))
            dx2 = dx3 + self.norm2.backward(self.ffn.backward(self.drop2.backward(dx3)))
            dx1 = dx2
            if self.has_cross:
                # x2 = x1 + drop_c(cross(norm_c(x1), ctx))
                dh, dcontext = self.cross.backward(self.drop_c.backward(dx2))
                dx1 = dx2 + self.norm_c.backward(dh)
            # x1 = x + drop1(attn(norm1(x)))
            dx = dx1 + self.norm1.backward(self.attn.backward(self.drop1.backward(dx1)))
        else:  # ds: the gradient of the sum inside each norm
            # x3 = norm2(x2 + drop2(ffn(x2)))
            ds = self.norm2.backward(dx3)
            dx2 = ds + self.ffn.backward(self.drop2.backward(ds))
            dx1 = dx2
            if self.has_cross:
                # x2 = norm_c(x1 + drop_c(cross(x1, ctx)))
                ds = self.norm_c.backward(dx2)
                dh, dcontext = self.cross.backward(self.drop_c.backward(ds))
                dx1 = ds + dh
            # x1 = norm1(x + drop1(attn(x)))
            ds = self.norm1.backward(dx1)
            dx = ds + self.attn.backward(self.drop1.backward(ds))
        return (dx, dcontext) if self.has_cross else dx
