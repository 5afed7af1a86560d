"""Checking an attention call's inputs, and the causal rule: shared by every attention pair (reference, flash,
and the fast tier).

Shapes: B batch, H query heads, Hkv key/value heads (H % Hkv == 0; G = H // Hkv query heads share one kv head),
Tq queries, Tk keys, D head size.
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
        mask = backend.to_backend_of(mask, q)  # a host mask (padding, say) for device queries: moved here
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


def allowed_scores(xp, spec: AttentionSpec):
    """Boolean broadcastable to (B, H, Tq, Tk): True where a query may attend (the mask and the causal rule);
    None when every score is allowed."""
    allowed = spec.mask
    if spec.causal:
        causal = causal_allowed(xp, spec.Tq, spec.Tk)  # (Tq, Tk)
        allowed = causal if allowed is None else (allowed & causal)
    return allowed
