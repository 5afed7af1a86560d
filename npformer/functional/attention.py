"""Scaled dot-product attention: the plain (reference) forward/backward pair.

Shapes: B batch, H query heads, Hkv key/value heads (H % Hkv == 0; G = H // Hkv query heads share one kv head),
Tq queries, Tk keys, D head size.

    S = scale * Q K^T                  (B, H, Tq, Tk), query head h reads kv head h // G
    S[not allowed] = -inf              allowed = mask & causal
    P = softmax(S) over keys           rows with nothing allowed are all zeros (not NaN)
    O = P V                            (B, H, Tq, D)

Grouped-query attention never copies k or v: q (B, H, Tq, D) is viewed as (B, Hkv, G*Tq, D), so each kv head
meets all G of its query heads in one matmul, and the gradients of k and v come out summed over the group.

The full probability matrix P (B, H, Tq, Tk) is kept for backward; ``flash_attention.py`` is the same function
computed in tiles, whose memory is linear in T.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import backend


class AttentionSpec(NamedTuple):
    """The validated sizes and options of one attention call (shared with the flash path)."""

    B: int
    H: int
    Hkv: int
    G: int  # query heads per kv head
    Tq: int
    Tk: int
    D: int
    scale: float
    mask: Any  # None, or a boolean array of ndim 4 broadcastable to (B, H, Tq, Tk)
    causal: bool


def check_attention_inputs(op, q, k, v, mask=None, causal=False, scale=None) -> AttentionSpec:
    """Validate the inputs of an attention call; raise ValueError / TypeError whose message starts with ``op``.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D); mask: None or boolean, broadcastable to (B, H, Tq, Tk).
    Returns an AttentionSpec with the sizes, the scale as a Python float (default 1/sqrt(D)) and the mask
    reshaped to 4 dimensions (leading size-1 axes added; a view).
    """
    for name, a in (("q", q), ("k", k), ("v", v)):
        if not hasattr(a, "ndim") or not hasattr(a, "dtype"):
            raise TypeError(f"{op}: {name} must be an array, got {type(a).__name__}")
        if a.ndim != 4:
            raise ValueError(f"{op}: {name} must be 4-D (B, heads, T, D), got shape {tuple(a.shape)}")
        if a.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a float array, got dtype {a.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Tq, D = q.shape
    Bk, Hkv, Tk, Dk = k.shape
    if k.shape != v.shape:
        raise ValueError(f"{op}: k has shape {tuple(k.shape)} but v has shape {tuple(v.shape)}; they must match")
    if Bk != B:
        raise ValueError(f"{op}: q has batch size {B} but k and v have {Bk}")
    if Dk != D:
        raise ValueError(f"{op}: q has head size D={D} but k and v have D={Dk}")
    if min(B, H, Tq, D, Hkv, Tk) == 0:
        raise ValueError(f"{op}: empty inputs are not supported: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if H % Hkv != 0:
        raise ValueError(f"{op}: k has {Hkv} heads, which does not divide q's {H} heads")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    else:
        try:
            scale = float(scale)  # a Python float: a numpy float64 scalar would upcast float32 arrays
        except (TypeError, ValueError):
            raise TypeError(f"{op}: scale must be a real number, got {scale!r}") from None
        if not math.isfinite(scale):
            raise ValueError(f"{op}: scale must be finite, got {scale}")
    if mask is not None:
        if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
            raise TypeError(f"{op}: mask must be a boolean array, got {type(mask).__name__}")
        if mask.dtype != np.bool_:
            raise TypeError(f"{op}: mask must be boolean (True where a query may attend), got dtype {mask.dtype}")
        full = (B, H, Tq, Tk)
        try:
            ok = mask.ndim <= 4 and np.broadcast_shapes(tuple(mask.shape), full) == full
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"(B, H, Tq, Tk) = {full}")
        mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    return AttentionSpec(B, H, Hkv, H // Hkv, Tq, Tk, D, scale, mask, bool(causal))


def causal_allowed(xp, Tq, Tk, q0=0, q1=None, k0=0, k1=None):
    """Boolean (q1-q0, k1-k0): True where query i may see key j under the causal rule j <= i + (Tk - Tq).

    The last query is aligned with the last key, as when decoding with a cache of Tk - Tq earlier keys.
    """
    q1 = Tq if q1 is None else q1
    k1 = Tk if k1 is None else k1
    rows = xp.arange(q0, q1, dtype=np.int64)[:, None] + (Tk - Tq)
    cols = xp.arange(k0, k1, dtype=np.int64)[None, :]
    return cols <= rows


def _blocked(xp, spec: AttentionSpec):
    """Boolean broadcastable to (B, H, Tq, Tk): True where a score must be hidden; None when nothing is."""
    blocked = None
    if spec.mask is not None:
        blocked = ~spec.mask
    if spec.causal:
        hidden = ~causal_allowed(xp, spec.Tq, spec.Tk)
        blocked = hidden if blocked is None else (blocked | hidden)
    return blocked


class AttentionCache(NamedTuple):
    q: Any  # (B, H, Tq, D)
    k: Any  # (B, Hkv, Tk, D)
    v: Any  # (B, Hkv, Tk, D)
    out: Any  # (B, H, Tq, D), for rowsum(dP * P) = rowsum(dO * O)
    p: Any  # (B, H, Tq, Tk) attention probabilities, zero where blocked
    spec: AttentionSpec


def attention_forward(q, k, v, mask=None, causal=False, scale=None):
    """Scaled dot-product attention with optional boolean mask, causal rule and grouped-query heads.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) with H % Hkv == 0 (query head h reads kv head h // (H // Hkv)).
    mask: None or boolean broadcastable to (B, H, Tq, Tk), True where a query may attend (key padding:
        (B, 1, 1, Tk)). causal: query i may see key j only if j <= i + (Tk - Tq). Both combine with "and".
    scale: multiplies the scores; default 1 / sqrt(D).
    Returns out (B, H, Tq, D) and the cache for ``attention_backward``. A query row with nothing to attend to
    gives a zero output row.
    """
    xp = backend.array_module(q, k, v)
    spec = check_attention_inputs("attention", q, k, v, mask, causal, scale)
    B, H, Hkv, G, Tq, Tk, D = spec[:7]

    # S = (scale * Q) K^T, with q viewed as (B, Hkv, G*Tq, D) so the G query heads of a group share k
    qs = (q * spec.scale).reshape(B, Hkv, G * Tq, D)
    s = xp.matmul(qs, k.swapaxes(-1, -2)).reshape(B, H, Tq, Tk)
    del qs

    # hide blocked scores, then a stable softmax over keys: P = exp(S - max) / sum(exp(S - max))
    blocked = _blocked(xp, spec)
    if blocked is not None:
        xp.copyto(s, -math.inf, where=blocked)
    row_max = s.max(axis=-1, keepdims=True)
    if blocked is not None:  # a row with every key hidden has max -inf: use 0 so exp gives zeros, not NaN
        xp.copyto(row_max, 0.0, where=(row_max == -math.inf))
    s -= row_max
    p = xp.exp(s, out=s)
    row_sum = p.sum(axis=-1, keepdims=True)
    if blocked is not None:  # empty rows sum to 0: divide by 1 instead, they stay all-zero
        xp.copyto(row_sum, 1.0, where=(row_sum == 0.0))
    p /= row_sum

    # O = P V, again with G query heads per kv head in one matmul
    out = xp.matmul(p.reshape(B, Hkv, G * Tq, Tk), v).reshape(B, H, Tq, D)
    return out, AttentionCache(q, k, v, out, p, spec)


def attention_backward(dout, cache: AttentionCache):
    """Gradients of attention: dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk (B, Hkv, Tk, D), dv (B, Hkv, Tk, D).

    dk and dv are summed over the G query heads that share each kv head.
    """
    # forward was: S = scale * Q K^T;  P = softmax(S) (zero where blocked);  O = P V
    xp = backend.array_module(dout)
    q, k, v, out, p, spec = cache
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    p_g = p.reshape(B, Hkv, G * Tq, Tk)
    do_g = dout.reshape(B, Hkv, G * Tq, D)

    # O = P V  =>  dV = P^T dO  (the G*Tq rows of a group are summed by the matmul itself)
    dv = xp.matmul(p_g.swapaxes(-1, -2), do_g)
    #           =>  dP = dO V^T
    dp = xp.matmul(do_g, v.swapaxes(-1, -2)).reshape(B, H, Tq, Tk)

    # P = softmax(S)  =>  dS = P * (dP - rowsum(dP * P)).
    # rowsum(dP * P)_i = sum_j P_ij dO_i . V_j = dO_i . O_i, a (B, H, Tq) sum instead of a (Tq, Tk) temporary.
    # Blocked entries have P = 0, so dS = 0 there; empty rows have O = 0 and P = 0, so their dS is 0.
    row_dot = (dout * out).sum(axis=-1, keepdims=True)
    dp -= row_dot
    dp *= p
    ds_g = dp.reshape(B, Hkv, G * Tq, Tk)

    # S = scale * Q K^T  =>  dQ = scale * dS K,  dK = scale * dS^T Q
    dq = xp.matmul(ds_g, k)
    dq *= spec.scale
    dk = xp.matmul(ds_g.swapaxes(-1, -2), q.reshape(B, Hkv, G * Tq, D))
    dk *= spec.scale
    return dq.reshape(B, H, Tq, D), dk, dv
