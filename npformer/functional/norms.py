"""Normalisations over the last (channel) axis: LayerNorm and RMSNorm, written as their maths.

Shapes: x (..., C), any number of leading axes (B, T, ...), C channels; statistics are per row of C.
The fast tier's versions (npformer.kernels.norms) return the same caches and are tested
equal to these.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend


def check_norm_inputs(op: str, x, params: dict) -> None:
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


def check_eps(op: str, eps) -> float:
    if not eps >= 0.0:  # also refuses NaN
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")
    return float(eps)  # a Python float: a NumPy float64 would turn float32 arithmetic into float64


def sum_rows(a):
    """(..., C) -> (C,): the sum over every leading axis (a parameter gradient collects every position's share)."""
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
    check_norm_inputs("layernorm", x, {"w": w, "b": b})
    eps = check_eps("layernorm", eps)
    xp = backend.array_module(x)
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean  # (..., C) centred
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1) biased variance, as PyTorch
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1)
    xhat = xc * rstd  # (..., C) zero mean, unit variance per row
    y = xhat * w + b
    return y, LayerNormCache(xhat, rstd, w)


def layernorm_backward(dy, cache: LayerNormCache):
    """Gradients of LayerNorm.

    dy: (..., C) -> dx: (..., C), dw: (C,), db: (C,)   (dw, db summed over all leading axes).

    Derivation. The forward was, per row of C values:
        mean = (1/C) sum_j x_j;   var = (1/C) sum_j (x_j - mean)^2;   rstd = (var + eps)^(-1/2)
        xhat_i = (x_i - mean) * rstd;   y_i = xhat_i * w_i + b_i
    First the parameters, summed over every row:
        dL/db_i = dy_i;   dL/dw_i = dy_i * xhat_i;   and dL/dxhat_i = dy_i * w_i  (call it dxhat_i)
    Then x_k reaches every xhat_i along three paths (llm.c's "term 1, term 2, term 3"):
        term 1, directly through x_i (i = k):    rstd * dxhat_k
        term 2, through the mean:                -rstd * (1/C) sum_i dxhat_i
        term 3, through rstd (the variance):
            d rstd / d x_k = -rstd^3 (x_k - mean) / C = -rstd^2 xhat_k / C
            dL / d rstd = sum_i dxhat_i (x_i - mean) = sum_i dxhat_i xhat_i / rstd
            so the term is  -rstd * xhat_k * (1/C) sum_i dxhat_i xhat_i
        (the variance's own dependence on the mean adds nothing: sum_j (x_j - mean) = 0.)
    Together:  dx_k = rstd * (dxhat_k - mean_i(dxhat_i) - xhat_k * mean_i(dxhat_i * xhat_i)).
    """
    xhat, rstd, w = cache
    db = sum_rows(dy)
    dw = sum_rows(dy * xhat)
    dxhat = dy * w
    dxhat_mean = dxhat.mean(axis=-1, keepdims=True)  # term 2's mean
    dxhat_xhat_mean = (dxhat * xhat).mean(axis=-1, keepdims=True)  # term 3's mean
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
    check_norm_inputs("rmsnorm", x, {"w": w})
    eps = check_eps("rmsnorm", eps)
    xp = backend.array_module(x)
    mean_square = (x * x).mean(axis=-1, keepdims=True)  # (..., 1)
    rrms = 1.0 / xp.sqrt(mean_square + eps)  # (..., 1)
    xhat = x * rrms
    y = xhat * w
    return y, RMSNormCache(xhat, rrms, w)


def rmsnorm_backward(dy, cache: RMSNormCache):
    """Gradients of RMSNorm.

    dy: (..., C) -> dx: (..., C), dw: (C,)   (dw summed over all leading axes).

    Derivation. The forward was, per row:  r = (mean_j(x_j^2) + eps)^(-1/2);  xhat_i = x_i * r;  y_i = xhat_i * w_i.
        dL/dw_i = dy_i * xhat_i (summed over rows);   dxhat_i = dy_i * w_i
        term 1, directly through x_i:   r * dxhat_k
        term 2, through r:              dr/dx_k = -r^3 x_k / C and dL/dr = sum_i dxhat_i x_i, so
                                        -r^3 x_k mean_i(dxhat_i x_i) = -r * xhat_k * mean_i(dxhat_i * xhat_i)
    Together:  dx_k = r * (dxhat_k - xhat_k * mean_i(dxhat_i * xhat_i)).
    """
    xhat, rrms, w = cache
    dw = sum_rows(dy * xhat)
    dxhat = dy * w
    dxhat_xhat_mean = (dxhat * xhat).mean(axis=-1, keepdims=True)
    dx = rrms * (dxhat - xhat * dxhat_xhat_mean)
    return dx, dw
