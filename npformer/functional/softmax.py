"""Softmax along one axis: a stable forward and its backward.

Shapes: x (...) with the softmax taken along ``axis`` (attention: the keys axis of (B, H, Tq, Tk)).
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend
from .activations import check_float


# ---------------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------------
class SoftmaxCache(NamedTuple):
    y: object  # the probabilities
    axis: int


def softmax_forward(x, axis: int = -1):
    """Stable softmax along ``axis`` (max subtracted first). A slice that is entirely -inf (fully masked) gives
    zeros, not NaN.

    x: (...) float -> y: (...) with y >= 0 summing to 1 along axis, cache.
    """
    check_float("softmax", "x", x)
    if x.ndim < 1:
        raise ValueError("softmax: x must have at least one axis, got a 0-d array")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis {axis} is out of range for x with {x.ndim} axes")
    axis = axis % x.ndim
    xp = backend.array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)  # an all -inf slice: subtract 0 instead of -inf (no inf - inf)
    e = xp.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    y = e / xp.where(s > 0, s, 1.0)  # an all -inf slice: 0 / 1 = 0
    return y, SoftmaxCache(y, axis)


def softmax_backward(dy, cache: SoftmaxCache):
    """dy: (...) -> dx: (...).

    Derivation. The forward was  y_i = exp(x_i) / sum_j exp(x_j)  along the axis (the max subtracted first changes
    nothing: it cancels between numerator and denominator).
        quotient rule:  dy_i/dx_k = y_i (delta_ik - y_k)
        chain rule:     dL/dx_k = sum_i dy_i y_i (delta_ik - y_k) = y_k (dy_k - sum_i dy_i y_i)
    A fully masked slice has y = 0 everywhere, so its dx is 0.
    """
    y, axis = cache
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


