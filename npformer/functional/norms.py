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
    xp = backend.array_module(x)
    C = x.shape[-1]
    x2d = x.reshape(-1, C)  # (N, C)
    xhat = xp.empty(x2d.shape, dtype=x.dtype)
    rstd = xp.empty((x2d.shape[0], 1), dtype=x.dtype)
    y = xp.empty(x2d.shape, dtype=x.dtype)
    mean_weights = xp.full((C, 1), 1.0 / C, dtype=x.dtype)  # row means as a matrix-vector product (BLAS)

    def kernel(x, xhat, rstd, y):  # a block of rows, every step in place
        mean = x @ mean_weights  # (n, 1)
        xp.subtract(x, mean, out=xhat)  # xc = x - mean
        xp.multiply(xhat, xhat, out=y)  # (y as scratch)
        var = y @ mean_weights  # biased variance like PyTorch
        var += eps
        xp.sqrt(var, out=var)
        xp.divide(1.0, var, out=rstd)  # rstd = 1 / sqrt(var + eps)
        xhat *= rstd  # xhat = xc * rstd
        xp.multiply(xhat, w, out=y)
        y += b  # y = xhat * w + b

    backend.blockwise(kernel, x2d, xhat, rstd, y)
    lead = tuple(x.shape[:-1])
    return y.reshape(x.shape), LayerNormCache(xhat.reshape(x.shape), rstd.reshape(lead + (1,)), w)


def layernorm_backward(dy, cache: LayerNormCache):
    """Gradients of LayerNorm.

    dy: (..., C) -> dx: (..., C), dw: (C,), db: (C,)   (dw, db summed over all leading axes).
    """
    xhat, rstd, w = cache
    xp = backend.array_module(xhat)
    C = xhat.shape[-1]
    dy2d = xp.ascontiguousarray(dy).reshape(-1, C)  # (N, C)
    xhat2d = xhat.reshape(-1, C)
    # forward: y = xhat * w + b
    db = dy2d.sum(axis=0)  # dL/db = sum over rows of dy
    dw = xp.einsum("nc,nc->c", dy2d, xhat2d)  # dL/dw = sum over rows of dy * xhat (no (N, C) temporary)
    # forward: xhat = (x - mean) * rstd, with mean = mean_j(x_j) and rstd = (mean_j((x_j - mean)^2) + eps)^(-1/2).
    # x reaches dx_i along three paths (llm.c's "term 1, term 2, term 3"):
    #   term 1, through x_i directly:        rstd * dxhat_i
    #   term 2, through the mean:           -rstd * mean_j(dxhat_j)
    #   term 3, through rstd (the variance): -rstd * xhat_i * mean_j(dxhat_j * xhat_j)
    # (term 3's mean-path contribution vanishes because the xhat_j sum to zero.)
    dx = xp.empty(dy2d.shape, dtype=xp.result_type(dy2d, xhat))
    mean_weights = xp.full((C, 1), 1.0 / C, dtype=dx.dtype)  # row means as a matrix-vector product (BLAS)

    def kernel(dy, xhat, rstd, dx):  # a block of rows, in place in dx and one block-sized scratch
        xp.multiply(dy, w, out=dx)  # dxhat = dL/dxhat
        # first, the two reductions:
        dxhat_mean = dx @ mean_weights  # (n, 1)
        scratch = dx * xhat
        dxhat_xhat_mean = scratch @ mean_weights
        # then the three terms together: dx = rstd * (dxhat - dxhat_mean - xhat * dxhat_xhat_mean)
        xp.multiply(xhat, dxhat_xhat_mean, out=scratch)
        dx -= dxhat_mean
        dx -= scratch
        dx *= rstd

    backend.blockwise(kernel, dy2d, xhat2d, rstd.reshape(-1, 1), dx)
    return dx.reshape(xhat.shape), dw, db


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
