"""Checking an attention call's inputs, and the causal rule: shared by every attention pair (reference, flash,
and the fast tier).

Shapes: B batch, H query heads, Hkv key/value heads (H % Hkv == 0; G = H // Hkv query heads share one kv head),
Tq queries, Tk keys, D head size; W the sliding window (None: none).

The causal rule aligns the last query with the last key: query i sits at key position i + (Tk - Tq) (the earlier
Tk - Tq keys come from a cache). With a window W it also sees only the last W keys up to there, itself included:

    allowed(i, j) = j <= i + (Tk - Tq)  and  j > i + (Tk - Tq) - W        (Longformer / Mistral's local attention)
"""

from __future__ import annotations

import math
import numbers
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
    window: int | None = None  # sliding window W (causal only): each query sees its last W keys; None: all


def check_window(op, window, causal) -> int | None:
    """window: None, or a positive integer with causal=True; returns it as a Python int (or None)."""
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"{op}: window must be None or a positive integer, got {window!r}")
    if not causal:
        raise ValueError(f"{op}: window={window} is a sliding window over the past: it needs causal=True")
    return int(window)


def check_attention_inputs(op, q, k, v, mask=None, causal=False, scale=None, window=None) -> AttentionSpec:
    """Validate the inputs of an attention call; raise ValueError / TypeError whose message starts with ``op``.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D); mask: None or boolean, broadcastable to (B, H, Tq, Tk).
    window: None or a positive integer (needs causal).
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
        mask = backend.to_backend_of(mask, q)  # a host mask (padding, say) for device queries: moved here
    window = check_window(op, window, causal)
    return AttentionSpec(B, H, Hkv, H // Hkv, Tq, Tk, D, scale, mask, bool(causal), window)


def causal_allowed(xp, Tq, Tk, q0=0, q1=None, k0=0, k1=None, window=None):
    """Boolean (q1-q0, k1-k0): True where query i may see key j under the causal rule j <= i + (Tk - Tq), and,
    with a window W, j > i + (Tk - Tq) - W (the last W keys only).

    The last query is aligned with the last key, as when decoding with a cache of Tk - Tq earlier keys.
    """
    q1 = Tq if q1 is None else q1
    k1 = Tk if k1 is None else k1
    rows = xp.arange(q0, q1, dtype=np.int64)[:, None] + (Tk - Tq)
    cols = xp.arange(k0, k1, dtype=np.int64)[None, :]
    if window is None:
        return cols <= rows
    return (cols <= rows) & (cols > rows - window)


def window_keys(spec: AttentionSpec, q0: int, q1: int) -> tuple[int, int]:
    """(k0, k1): the keys queries q0:q1 can see at most under the causal rule and the window (k1 <= k0: none).

    Query i sees keys up to i + (Tk - Tq) and, with a window W, from i + (Tk - Tq) - W + 1 on. Without the causal
    rule, every key: (0, Tk)."""
    if not spec.causal:
        return 0, spec.Tk
    shift = spec.Tk - spec.Tq
    k1 = min(spec.Tk, max(0, q1 + shift))
    k0 = 0 if spec.window is None else min(spec.Tk, max(0, q0 + shift - spec.window + 1))
    return k0, k1


def window_queries(spec: AttentionSpec, k0: int, k1: int) -> tuple[int, int]:
    """(q0, q1): the queries that can see some key of k0:k1 under the causal rule and the window (q1 <= q0:
    none). The inverse of ``window_keys``: query i sees key j iff i >= j - (Tk - Tq) and i < j - (Tk - Tq) + W."""
    if not spec.causal:
        return 0, spec.Tq
    shift = spec.Tk - spec.Tq
    q0 = min(spec.Tq, max(0, k0 - shift))
    q1 = spec.Tq if spec.window is None else min(spec.Tq, max(0, k1 - 1 - shift + spec.window))
    return q0, q1


def allowed_scores(xp, spec: AttentionSpec):
    """Boolean broadcastable to (B, H, Tq, Tk): True where a query may attend (the mask, the causal rule and the
    window); None when every score is allowed."""
    allowed = spec.mask
    if spec.causal:
        causal = causal_allowed(xp, spec.Tq, spec.Tk, window=spec.window)  # (Tq, Tk)
        allowed = causal if allowed is None else (allowed & causal)
    return allowed
