"""Scaled dot-product attention, written as its maths: the reference forward/backward pair.

Shapes: B batch, H query heads, Hkv key/value heads (H % Hkv == 0; G = H // Hkv query heads share one kv head),
Tq queries, Tk keys, D head size.

    K, V = each kv head repeated G times            (B, H, Tk, D): query head h reads kv head h // G
    S = scale * Q K^T                               (B, H, Tq, Tk)
    S[not allowed] = -inf                           allowed = mask & causal (& window)
    P = softmax(S) over keys                        rows with nothing allowed are all zeros (not NaN)
    O = P V                                         (B, H, Tq, D)

The whole probability matrix P is kept for the backward. ``flash_attention.py`` is the same function computed in
tiles with an online softmax (memory linear in T); npformer.kernels.attention is this one computed in causal row
blocks, in place. Both are tested equal to this one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend
from .attention_inputs import AttentionSpec, allowed_scores, check_attention_inputs
from .softmax import SoftmaxCache, softmax_backward, softmax_forward


class AttentionCache(NamedTuple):
    q: Any  # (B, H, Tq, D)
    k: Any  # (B, H, Tk, D) the kv heads repeated to one per query head
    v: Any  # (B, H, Tk, D)
    softmax: SoftmaxCache  # holds P (B, H, Tq, Tk)
    spec: AttentionSpec


def attention_forward(q, k, v, mask=None, causal=False, scale=None, window=None):
    """Scaled dot-product attention with optional boolean mask, causal rule and grouped-query heads.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) with H % Hkv == 0 (query head h reads kv head h // (H // Hkv)).
    mask: None or boolean broadcastable to (B, H, Tq, Tk), True where a query may attend (key padding:
        (B, 1, 1, Tk)). causal: query i may see key j only if j <= i + (Tk - Tq). Both combine with "and".
    window: None, or W >= 1 with causal (a sliding window): query i also needs j > i + (Tk - Tq) - W, so it sees
        its last W keys, itself included. Here the hidden scores are still computed and then masked: the cost
        stays Tq * Tk (the flash path and the fast tier skip them).
    scale: multiplies the scores; default 1 / sqrt(D).
    Returns out (B, H, Tq, D) and the cache for ``attention_backward``. A query row with nothing to attend to
    gives a zero output row.
    """
    spec = check_attention_inputs("attention", q, k, v, mask, causal, scale, window)
    xp = backend.array_module(q, k, v)
    k = xp.repeat(k, spec.G, axis=1)  # (B, H, Tk, D)
    v = xp.repeat(v, spec.G, axis=1)
    s = spec.scale * (q @ k.swapaxes(-1, -2))  # (B, H, Tq, Tk)
    allowed = allowed_scores(xp, spec)  # None (all allowed) or boolean broadcastable to s
    if allowed is not None:
        s = xp.where(allowed, s, -xp.inf)
    p, softmax_cache = softmax_forward(s, axis=-1)  # (B, H, Tq, Tk), zero where not allowed
    out = p @ v  # (B, H, Tq, D)
    return out, AttentionCache(q, k, v, softmax_cache, spec)


def attention_backward(dout, cache: AttentionCache):
    """Gradients of attention: dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk (B, Hkv, Tk, D), dv (B, Hkv, Tk, D).

    Derivation, the forward read upside down:
        O = P V                  ->  dP = dO V^T                      dV = P^T dO
        P = softmax(S)           ->  dS = softmax_backward(dP)        (= P * (dP - rowsum(dP * P)))
        S[not allowed] = -inf    ->  nothing to do: P is 0 there, so dS is 0 there too (the window is one more
                                     "not allowed": its backward is the same zero)
        S = scale * Q K^T        ->  dQ = scale * dS K                dK = scale * dS^T Q
        K, V repeated G times    ->  dK, dV of a kv head = the sum over its G query heads
    """
    q, k, v, softmax_cache, spec = cache
    p = softmax_cache.y
    dp = dout @ v.swapaxes(-1, -2)  # (B, H, Tq, Tk)
    dv = p.swapaxes(-1, -2) @ dout  # (B, H, Tk, D)
    ds = softmax_backward(dp, softmax_cache)  # (B, H, Tq, Tk)
    dq = spec.scale * (ds @ k)  # (B, H, Tq, D)
    dk = spec.scale * (ds.swapaxes(-1, -2) @ q)  # (B, H, Tk, D)
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    dk = dk.reshape(B, Hkv, G, Tk, D).sum(axis=2)  # (B, Hkv, Tk, D)
    dv = dv.reshape(B, Hkv, G, Tk, D).sum(axis=2)
    return dq, dk, dv
