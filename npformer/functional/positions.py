"""Position information: rotary embeddings (RoPE, a forward/backward pair) and the sinusoidal table.

Shapes: B batch, H heads, T time, D head size, C channels.

RoPE, half-split convention (as in GPT-NeoX / Llama): dimension i pairs with i + D/2, and pair i at position p
is rotated by the angle p * base^(-2i/D):

    y1 = x1 cos - x2 sin
    y2 = x2 cos + x1 sin          x1 = x[..., :D/2], x2 = x[..., D/2:]

A rotation keeps norms, and rotating q at position m and k at position n makes q.k depend only on m - n.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import backend


class RopeCache(NamedTuple):
    cos: Any  # (*positions.shape, D/2) in x's dtype
    sin: Any


def _rope_tables(xp, positions, D, base, dtype):
    """cos and sin of the angles positions * base^(-2i/D), i < D/2, computed in float64 then cast to dtype."""
    half = D // 2
    inv_freq = base ** (xp.arange(half, dtype=np.float64) * (-2.0 / D))  # (D/2,)
    angles = positions.astype(np.float64)[..., None] * inv_freq  # (*positions.shape, D/2)
    return xp.cos(angles).astype(dtype, copy=False), xp.sin(angles).astype(dtype, copy=False)


def rope_forward(x, positions=None, base=10000.0):
    """Rotary position embedding.

    x: (..., T, D) float, D even (typically q or k as (B, H, T, D)).
    positions: integer array of shape (T,) (default 0..T-1), or any integer array broadcastable to
        x.shape[:-1], e.g. (B, 1, T); pass ``offset + arange(T)`` when decoding with a cache.
    base: the frequency base (10000 in the RoFormer paper).
    Returns y (..., T, D) in x's dtype and the cache for ``rope_backward``.
    """
    if not hasattr(x, "ndim") or x.ndim < 2:
        raise ValueError(f"rope: x must have at least 2 dimensions (..., T, D), got {getattr(x, 'shape', x)!r}")
    if x.dtype.kind != "f":
        raise TypeError(f"rope: x must be a float array, got dtype {x.dtype}")
    T, D = x.shape[-2], x.shape[-1]
    if D % 2 != 0:
        raise ValueError(f"rope: head size D={D} is odd; rotary embedding pairs dimension i with i + D/2")
    base = float(base)
    if not (base > 0.0 and math.isfinite(base)):
        raise ValueError(f"rope: base must be a positive finite number, got {base}")
    xp = backend.array_module(x)
    if positions is None:
        positions = xp.arange(T, dtype=np.int64)
    else:
        positions = xp.asarray(positions)
        if positions.dtype.kind not in "iu":
            raise TypeError(f"rope: positions must be an integer array, got dtype {positions.dtype}")
        lead = tuple(x.shape[:-1])
        try:
            ok = positions.ndim <= len(lead) and np.broadcast_shapes(tuple(positions.shape), lead) == lead
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"rope: positions of shape {tuple(positions.shape)} do not broadcast to "
                             f"x.shape[:-1] = {lead}")

    cos, sin = _rope_tables(xp, positions, D, base, x.dtype)
    half = D // 2
    x1, x2 = x[..., :half], x[..., half:]
    y1 = x1 * cos - x2 * sin  # positions broadcast to x.shape[:-1], so y has x's shape
    y2 = x2 * cos + x1 * sin
    return xp.concatenate([y1, y2], axis=-1), RopeCache(cos, sin)


def rope_backward(dy, cache: RopeCache):
    """Gradient of RoPE: dy (..., T, D) -> dx (..., T, D), the inverse rotation of dy.

    Derivation. The forward was, per pair:  y1 = x1 cos - x2 sin;  y2 = x2 cos + x1 sin  (a rotation R), so
        dx1 = dy1 dy1/dx1 + dy2 dy2/dx1 =  dy1 cos + dy2 sin
        dx2 = dy1 dy1/dx2 + dy2 dy2/dx2 = -dy1 sin + dy2 cos
    i.e. dx = R^T dy, the rotation by the opposite angle.
    """
    xp = backend.array_module(dy)
    cos, sin = cache
    half = dy.shape[-1] // 2
    dy1, dy2 = dy[..., :half], dy[..., half:]
    dx1 = dy1 * cos + dy2 * sin
    dx2 = -dy1 * sin + dy2 * cos
    return xp.concatenate([dx1, dx2], axis=-1)


def sinusoidal_positions(T, C, dtype=None):
    """The fixed sinusoidal table of "Attention Is All You Need", (T, C), on the active backend; no gradient.

    PE[p, 2i] = sin(p / 10000^(2i/C)),  PE[p, 2i+1] = cos(p / 10000^(2i/C)).
    An odd C is allowed: the table is computed for C + 1 columns' frequencies with exponent 2i/C and the last
    (cos) column is dropped, so column c always holds the same function whatever the parity of C.
    dtype defaults to ``backend.float_dtype()``; values are computed in float64 and then cast.
    """
    if not (isinstance(T, (int, np.integer)) and isinstance(C, (int, np.integer))) or T < 1 or C < 1:
        raise ValueError(f"sinusoidal_positions: T and C must be positive integers, got T={T!r}, C={C!r}")
    T, C = int(T), int(C)
    dtype = backend.float_dtype() if dtype is None else np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"sinusoidal_positions: dtype must be a float dtype, got {dtype}")
    xp = backend.xp()
    n_pairs = (C + 1) // 2
    inv_freq = 10000.0 ** (xp.arange(n_pairs, dtype=np.float64) * (-2.0 / C))  # 1 / 10000^(2i/C)
    angles = xp.arange(T, dtype=np.float64)[:, None] * inv_freq  # (T, n_pairs)
    table = xp.empty((T, 2 * n_pairs), dtype=np.float64)
    table[:, 0::2] = xp.sin(angles)
    table[:, 1::2] = xp.cos(angles)
    return xp.ascontiguousarray(table[:, :C]).astype(dtype, copy=False)
