"""Multi-head attention: self- or cross-attention, GQA/MQA, optional RoPE, causal and padding masks.

Shapes: x (B, T, C) queries' input; context (B, S, C_ctx) keys' and values' input for cross-attention;
H query heads, Hkv key/value heads (H % Hkv == 0), D head size; mask boolean broadcastable to (B, H, T, Tk),
True where a query may attend (see ``padding_mask``).
"""

from __future__ import annotations

import numbers

from .. import backend
from ..kernels import ops
from .linear import Linear
from .module import Module

ATTENTION_IMPLS = ("plain", "flash")


def padding_mask(valid):
    """valid: boolean (B, Tk), True at real tokens -> mask (B, 1, 1, Tk) for attention_forward."""
    return valid[:, None, None, :]


class MultiHeadAttention(Module):
    """out = concat_h(attention(x Wq_h, src Wk_h, src Wv_h)) Wo, with src = x (self) or context (cross).

    Self-attention projects q, k and v with one (C, (H + 2 Hkv) D) matrix (one matrix product instead of three);
    cross-attention projects q from x and k, v from the context with a (C_ctx, 2 Hkv D) matrix.
    ``impl`` picks the attention kernel: "plain" (probabilities kept for backward) or "flash" (tiled, online
    softmax, memory linear in T). Both have the same maths and the same results.
    ``window`` W (self-attention, used with causal=True): sliding-window attention, each query sees its last W
    keys, itself included (Mistral). The flash path and the fast tier skip the blocks outside the window, so the
    cost grows as T * W; a key/value cache needs to keep only W positions (npformer.decode.RollingKVCache).
    """

    caches = ("_cache",)  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, dim: int, n_head: int, n_kv_head: int | None = None, head_dim: int | None = None,
                 bias: bool = True, cross: bool = False, context_dim: int | None = None, rope: bool = False,
                 rope_base: float = 10000.0, proj_std: float = 0.02, rng=None, impl: str = "plain",
                 window: int | None = None):
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_head < 1 or n_kv_head < 1 or n_head % n_kv_head:
            raise ValueError(f"attention: {n_kv_head} key/value heads do not divide {n_head} query heads")
        if head_dim is None:
            if dim % n_head:
                raise ValueError(f"attention: width {dim} is not divisible by {n_head} heads")
            head_dim = dim // n_head
        if rope and head_dim % 2:
            raise ValueError(f"attention: RoPE needs an even head size, got {head_dim}")
        if rope and cross:
            raise ValueError("attention: RoPE applies to self-attention, not cross-attention")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention: impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
                raise ValueError(f"attention: window must be None or a positive int, got {window!r}")
            window = int(window)
            if cross:
                raise ValueError("attention: a sliding window applies to causal self-attention, not cross-attention")
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.window = window  # sliding window: each query sees only the last `window` keys (itself included)
        self.cross, self.rope, self.rope_base, self.impl = cross, rope, rope_base, impl
        H, Hkv, D = n_head, n_kv_head, head_dim
        if cross:
            self.q = Linear(dim, H * D, bias=bias, rng=rng)
            self.kv = Linear(context_dim or dim, 2 * Hkv * D, bias=bias, rng=rng)
        else:
            self.qkv = Linear(dim, (H + 2 * Hkv) * D, bias=bias, rng=rng)
        self.proj = Linear(H * D, dim, bias=bias, std=proj_std, rng=rng)
        self._cache = None
        # inspection only (npformer.inspect sets it for one forward): a callable given each forward's
        # (q, k, v, mask, causal, window) as the attention kernel sees them. None in training: one check per forward.
        self.capture = None

    # -- helpers ---------------------------------------------------------------------------------------------
    def _kernel(self):
        if self.impl == "flash":
            return ops.flash_attention_forward, ops.flash_attention_backward
        return ops.attention_forward, ops.attention_backward

    def project_context(self, context):
        """Cross-attention keys and values of a context, computed once and reused while decoding (no backward).

        context: (B, S, C_ctx) -> (k, v), each (B, Hkv, S, D)."""
        B, S, _ = context.shape
        kv, _ = ops.linear_forward(context, self.kv.weight.data, None if self.kv.bias is None else self.kv.bias.data)
        kv = kv.reshape(B, S, 2, self.n_kv_head, self.head_dim)
        return kv[:, :, 0].transpose(0, 2, 1, 3), kv[:, :, 1].transpose(0, 2, 1, 3)

    # -- forward / backward ------------------------------------------------------------------------------------
    def forward(self, x, context=None, mask=None, causal: bool = False, positions=None, kv_cache=None,
                context_kv=None):
        """x: (B, T, C) -> (B, T, C).

        context:    (B, S, C_ctx), cross-attention only.
        positions:  integer (T,) positions for RoPE (default 0..T-1; an offset while decoding with a cache).
        kv_cache:   inference only: an object whose ``update(k, v) -> (k_all, v_all)`` appends this call's keys
                    and values (B, Hkv, T, D) to those of earlier calls.
        context_kv: inference only: (k, v) from ``project_context``, used instead of ``context``.
        """
        if x.ndim != 3:
            raise ValueError(f"attention: x must be (B, T, C), got shape {x.shape}")
        B, T, _ = x.shape
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        if self.rope and kv_cache is not None and positions is None:
            raise ValueError("attention: with RoPE and a key/value cache, pass the new tokens' positions (the "
                             "cache already holds earlier ones, so 0..T-1 would be wrong)")
        if self.cross and context is not None and context.shape[0] != B:
            raise ValueError(f"attention: context batch {context.shape[0]} != query batch {B}")
        if self.cross:
            q = self.q.forward(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)
            if context_kv is not None:
                k, v = context_kv
            else:
                if context is None:
                    raise ValueError("attention: cross-attention needs a context (B, S, C_ctx)")
                S = context.shape[1]
                kv = self.kv.forward(context).reshape(B, S, 2, Hkv, D)
                k, v = kv[:, :, 0].transpose(0, 2, 1, 3), kv[:, :, 1].transpose(0, 2, 1, 3)
        else:
            # one (B, T, (H + 2Hkv) D) product, then views: (B, T, H + 2Hkv, D) -> heads first
            qkv = self.qkv.forward(x).reshape(B, T, H + 2 * Hkv, D)
            q = qkv[:, :, :H].transpose(0, 2, 1, 3)
            k = qkv[:, :, H:H + Hkv].transpose(0, 2, 1, 3)
            v = qkv[:, :, H + Hkv:].transpose(0, 2, 1, 3)
        rope_caches = None
        if self.rope:
            q, rq = ops.rope_forward(q, positions, base=self.rope_base)
            k, rk = ops.rope_forward(k, positions, base=self.rope_base)
            rope_caches = (rq, rk)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        if self.capture is not None:
            self.capture(q, k, v, mask, causal, self.window)
        fwd, _ = self._kernel()
        out, attn_cache = fwd(q, k, v, mask=mask, causal=causal, window=self.window)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, H * D)
        self._cache = (attn_cache, rope_caches, B, T, k.shape[2])
        return self.proj.forward(out)

    def backward(self, dy):
        """dy: (B, T, C) -> dx (B, T, C); cross-attention returns (dx, dcontext)."""
        attn_cache, rope_caches, B, T, S = self._cache
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        # in the forward pass this was: y = concat_heads(out) @ Wo + bo
        dout = self.proj.backward(dy).reshape(B, T, H, D).transpose(0, 2, 1, 3)
        _, bwd = self._kernel()
        dq, dk, dv = bwd(dout, attn_cache)
        if rope_caches is not None:
            dq = ops.rope_backward(dq, rope_caches[0])
            dk = ops.rope_backward(dk, rope_caches[1])
        self._cache = None
        xp = backend.array_module(dq)
        if self.cross:
            dx = self.q.backward(dq.transpose(0, 2, 1, 3).reshape(B, T, H * D))
            dkv = xp.empty((B, S, 2, Hkv, D), dtype=dq.dtype)
            dkv[:, :, 0] = dk.transpose(0, 2, 1, 3)
            dkv[:, :, 1] = dv.transpose(0, 2, 1, 3)
            dcontext = self.kv.backward(dkv.reshape(B, S, 2 * Hkv * D))
            return dx, dcontext
        # the forward split one product into q, k, v views: their gradients fill one buffer of the same layout
        dqkv = xp.empty((B, T, H + 2 * Hkv, D), dtype=dq.dtype)
        dqkv[:, :, :H] = dq.transpose(0, 2, 1, 3)
        dqkv[:, :, H:H + Hkv] = dk.transpose(0, 2, 1, 3)
        dqkv[:, :, H + Hkv:] = dv.transpose(0, 2, 1, 3)
        return self.qkv.backward(dqkv.reshape(B, T, (H + 2 * Hkv) * D))
