"""Normalisations over the last (channel) axis: LayerNorm and RMSNorm.

Shapes: x (..., C), any number of leading axes (B, T, ...), C channels; statistics are per row of C.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend


def _check(op: str, x, params: dict) -> None:
    """x float with at least one axis; every parameter a float (C,) vector of x's dtype."""
    if getattr(x, "dtype", None) is None or x.dtype.kind != "f":
        raise TypeError(f"{op}: x must be a float array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have a channel axis (..., C), got a 0-d array")
    c = x.shape[-1]
    for name, p in params.items():
        if getattr(p, "dtype", None) is None or p.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a float array, got {getattr(p, 'dtype', type(p).__name__)}")
        if tuple(p.shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape (C,) = ({c},) to match x {tuple(x.shape)}, "
                             f"got {tuple(p.shape)}")
        if p.dtype != x.dtype:
            raise TypeError(f"{op}: {name} is {p.dtype} but x is {x.dtype}; they must match")


def _sum_rows(a):
    """(..., C) -> (C,): sum over every leading axis (parameter gradients)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


# ---------------------------------------------------------------------------------------------------------------
# LayerNorm: y = (x - mean) / sqrt(var + eps) * w + b
# ---------------------------------------------------------------------------------------------------------------
class LayerNormCache(NamedTuple):
    xhat: object  # (..., C): the normalised input (x - mean) * rstd
    rstd: object  # (..., 1): 1 / sqrt(var + eps)
    w: object  # (C,)


def layernorm_forward(x, w, b, eps: float = 1e-5):
    """LayerNorm over the last axis.

    x: (..., C) float; w, b: (C,) -> y: (..., C), cache.
    """
    _check("layernorm", x, {"w": w, "b": b})
    if not eps >= 0.0:
        raise ValueError(f"layernorm: eps must be >= 0, got {eps}")
    eps = float(eps)
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1), biased variance like PyTorch
    rstd = 1.0 / backend.array_module(x).sqrt(var + eps)
    xhat = xc * rstd
    y = xhat * w + b
    return y, LayerNormCache(xhat, rstd, w)


def layernorm_backward(dy, cache: LayerNormCache):
    """Gradients of LayerNorm.

    dy: (..., C) -> dx: (..., C), dw: (C,), db: (C,)   (dw, db summed over all leading axes).
    """
    xhat, rstd, w = cache
    # forward: y = xhat * w + b
    db = _sum_rows(dy)  # dL/db = sum over rows of dy
    dw = _sum_rows(dy * xhat)  # dL/dw = sum over rows of dy * xhat
    dxhat = dy * w  # dL/dxhat
    # forward: xhat = (x - mean) * rstd, with mean = mean_j(x_j) and rstd = (mean_j((x_j - mean)^2) + eps)^(-1/2).
    # x reaches dx_i along three paths (llm.c's "term 1, term 2, term 3"):
    #   term 1, through x_i directly:        rstd * dxhat_i
    #   term 2, through the mean:           -rstd * mean_j(dxhat_j)
    #   term 3, through rstd (the variance): -rstd * xhat_i * mean_j(dxhat_j * xhat_j)
    # (term 3's mean-path contribution vanishes because the xhat_j sum to zero.)
    # first, the two reductions:
    dxhat_mean = dxhat.mean(axis=-1, keepdims=True)
    dxhat_xhat_mean = (dxhat * xhat).mean(axis=-1, keepdims=True)
    # then the three terms together:
    dx = rstd * (dxhat - dxhat_mean - xhat * dxhat_xhat_mean)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------------------
# RMSNorm: y = x / sqrt(mean(x^2) + eps) * w
# ---------------------------------------------------------------------------------------------------------------
class RMSNormCache(NamedTuple):
    xhat: object  # (..., C): x * rrms
    rrms: object  # (..., 1): 1 / sqrt(mean(x^2) + eps)
    w: object  # (C,)


def rmsnorm_forward(x, w, eps: float = 1e-6):
    """RMSNorm over the last axis (no centring, no bias).

    x: (..., C) float; w: (C,) -> y: (..., C), cache.
    """
    _check("rmsnorm", x, {"w": w})
    if not eps >= 0.0:
        raise ValueError(f"rmsnorm: eps must be >= 0, got {eps}")
    eps = float(eps)
    ms = (x * x).mean(axis=-1, keepdims=True)  # (..., 1) mean square
    rrms = 1.0 / backend.array_module(x).sqrt(ms + eps)
    xhat = x * rrms
    y = xhat * w
    return y, RMSNormCache(xhat, rrms, w)


def rmsnorm_backward(dy, cache: RMSNormCache):
    """Gradients of RMSNorm.

    dy: (..., C) -> dx: (..., C), dw: (C,)   (dw summed over all leading axes).
    """
    xhat, rrms, w = cache
    # forward: y = xhat * w
    dw = _sum_rows(dy * xhat)
    dxhat = dy * w
    # forward: xhat_i = x_i * r, with r = (mean_j(x_j^2) + eps)^(-1/2)
    #   term 1, through x_i directly:  r * dxhat_i
    #   term 2, through r:             dL/dr = sum_j dxhat_j * x_j;  dr/dx_i = -r^3 * x_i / C
    #                                  -> -r^3 * x_i * mean_j(dxhat_j * x_j) = -r * xhat_i * mean_j(dxhat_j * xhat_j)
    dxhat_xhat_mean = (dxhat * xhat).mean(axis=-1, keepdims=True)
    dx = rrms * (dxhat - xhat * dxhat_xhat_mean)
    return dx, dw
