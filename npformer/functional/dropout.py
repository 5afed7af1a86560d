"""Inverted dropout: a random mask in the forward, the same mask in the backward.

Shapes: x (...); the mask has x's shape and dtype.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend
from .activations import check_float


# ---------------------------------------------------------------------------------------------------------------
# dropout (inverted: kept values are scaled by 1 / (1 - p) in training, so evaluation needs no change)
# ---------------------------------------------------------------------------------------------------------------
class DropoutCache(NamedTuple):
    mask: object  # (...) in x's dtype: 0 where dropped, 1 / (1 - p) where kept; None when p == 0


def dropout_forward(x, p: float, rng):
    """Inverted dropout: y = x * mask, mask = keep / (1 - p), keep ~ Bernoulli(1 - p).

    x: (...) float; p in [0, 1); rng: a backend.Generator on x's backend (may be None when p == 0)
    -> y: (...), cache. p == 0 returns x itself and no mask.
    """
    check_float("dropout", "x", x)
    if not 0.0 <= p < 1.0:  # also refuses NaN
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if p == 0:
        return x, DropoutCache(None)
    if not isinstance(rng, backend.Generator):
        raise TypeError(f"dropout: rng must be a backend.Generator when p > 0, got {type(rng).__name__}")
    if rng.xp is not backend.array_module(x):
        raise ValueError(f"dropout: rng draws on {rng.backend} but x is a {backend.array_module(x).__name__} array")
    keep = rng.random(x.shape, dtype=x.dtype) >= p  # P(keep) = 1 - p
    mask = keep.astype(x.dtype) * (1.0 / (1.0 - float(p)))
    return x * mask, DropoutCache(mask)


def dropout_backward(dy, cache: DropoutCache):
    """dy: (...) -> dx: (...).

    Derivation. The forward was  y = x * mask  elementwise, so dy/dx = mask: dx = dy * mask, the same mask (a
    dropped element passes no gradient back); with p == 0 the forward was the identity, and so is this.
    """
    if cache.mask is None:
        return dy
    return dy * cache.mask
