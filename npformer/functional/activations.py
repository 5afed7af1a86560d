"""Elementwise activations (GELU, ReLU, SwiGLU), softmax and dropout.

Shapes: any (...) unless stated; outputs and gradients have the input's shape and dtype.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import NamedTuple

import numpy as np  # only for the NumPy-specific erf below and dtype checks; ops use xp

from .. import backend


def _check_float(op: str, name: str, a) -> None:
    if getattr(a, "dtype", None) is None or a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a float array, got {getattr(a, 'dtype', type(a).__name__)}")


# ---------------------------------------------------------------------------------------------------------------
# erf: the one function NumPy lacks. CuPy has cupyx.scipy.special.erf; SciPy, when installed (it is optional),
# has scipy.special.erf; otherwise we evaluate it from two classical expansions (Abramowitz & Stegun 7.1.6 and
# 7.1.14), accurate to a few ulp in float64 (checked against math.erf in the tests).
# ---------------------------------------------------------------------------------------------------------------
_ERF_SPLIT = 2.5  # series below, continued fraction above
_ERF_SERIES_TERMS = 40  # enough for |x| < 2.5 in float64 (relative error ~1e-16)
_ERF_CF_TERMS = 30  # enough for |x| >= 2.5 (faster convergence the larger |x|)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ONE_OVER_SQRT_PI = 1.0 / math.sqrt(math.pi)


@functools.lru_cache(maxsize=None)
def _scipy_erf():
    """scipy.special.erf if SciPy is installed, else None (looked up once)."""
    if importlib.util.find_spec("scipy") is None:
        return None
    try:
        from scipy.special import erf as scipy_erf
    except Exception:  # a broken SciPy install: fall back to our own
        return None
    return scipy_erf


def _erf_series(a):
    """erf(a) for 0 <= a < ~3 from the all-positive series (A&S 7.1.6), with no cancellation:
    erf(a) = 2/sqrt(pi) * exp(-a^2) * sum_n (2 a^2)^n * a / (1 * 3 * ... * (2n + 1)), summed Horner-style."""
    t = 2.0 * a * a
    s = np.ones_like(a)
    for n in range(_ERF_SERIES_TERMS, 0, -1):
        s = 1.0 + s * (t * (1.0 / (2 * n + 1)))
    return _TWO_OVER_SQRT_PI * a * np.exp(-a * a) * s


def _erfc_continued_fraction(a):
    """erfc(a) for a >= ~2 from the continued fraction (A&S 7.1.14), evaluated from the tail:
    erfc(a) = exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + 2 / (a + ...)))))."""
    a = np.minimum(a, 30.0)  # erfc(30) underflows to 0 anyway; keeps a*a finite for huge inputs
    f = a.copy()
    for k in range(_ERF_CF_TERMS, 0, -1):
        f = a + (0.5 * k) / f
    return _ONE_OVER_SQRT_PI * np.exp(-a * a) / f


# Abramowitz & Stegun 7.1.26: erf(a) = 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-a^2), t = 1 / (1 + p a),
# for a >= 0, with |error| <= 1.5e-7 in exact arithmetic; evaluated in float32 the error stays below 6e-7 (a few
# float32 ulp; tested against math.erf), in ~12 passes instead of the float64 path's ~120.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf_float32(x):
    """erf for float32 arrays (A&S 7.1.26; accurate to float32 precision), computed in float32."""
    a = np.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    poly = np.full_like(a, _AS_A[4])
    for coeff in _AS_A[3::-1]:  # Horner: ((a5 t + a4) t + a3) t ...
        poly *= t
        poly += coeff
    poly *= t
    poly *= np.exp(-(a * a))
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, x)  # erf is odd


def _erf_numpy(x):
    if x.dtype == np.float32:
        return _erf_float32(x)
    flat = x.reshape(-1)
    a = np.abs(flat)
    out = np.empty_like(a)
    small = a < _ERF_SPLIT
    out[small] = _erf_series(a[small])
    large = ~small
    out[large] = 1.0 - _erfc_continued_fraction(a[large])
    return np.copysign(out, flat).reshape(x.shape)  # erf is odd


def erf(x):
    """The error function, elementwise, in x's dtype, on x's backend.

    CuPy: cupyx.scipy.special.erf. NumPy: scipy.special.erf when SciPy is installed, else our own evaluation:
    in float64 to a few ulp (series and continued fraction: slow, for gradient checks), in float32 to a few
    float32 ulp (|error| < 6e-7, A&S 7.1.26: ten times faster, for training).
    """
    xp = backend.array_module(x)
    if xp is not np:
        import cupyx.scipy.special  # only reached for CuPy arrays

        return cupyx.scipy.special.erf(x)
    scipy_erf = _scipy_erf()
    if scipy_erf is not None:
        return scipy_erf(x)
    return _erf_numpy(np.asarray(x))


# ---------------------------------------------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------------------------------------------
GELU_MODES = ("tanh", "none")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluCache(NamedTuple):
    x: object
    approximate: str


def gelu_forward(x, approximate: str = "tanh"):
    """GELU. approximate="tanh" (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
    approximate="none" (exact): x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).

    x: (...) float -> y: (...), cache.
    """
    if approximate not in GELU_MODES:
        raise ValueError(f"gelu: approximate must be one of {GELU_MODES}, got {approximate!r}")
    _check_float("gelu", "x", x)
    xp = backend.array_module(x)
    if approximate == "tanh":
        # y = 0.5 x (1 + tanh(u)), u = k (x + c x^3), computed in place block by block (_gelu_tanh_kernel)
        x = xp.ascontiguousarray(x)
        y = xp.empty_like(x)
        backend.blockwise(_gelu_tanh_kernel, x.reshape(-1), y.reshape(-1))
    else:
        y = 0.5 * x * (1.0 + erf(x * _INV_SQRT2))
    return y, GeluCache(x, approximate)


def _gelu_tanh_kernel(x, y):
    """y = 0.5 x (1 + tanh(k x (1 + c x^2))) into y, with no temporaries (x, y: 1-D blocks)."""
    xp = backend.array_module(x)
    xp.multiply(x, x, out=y)  # x^2
    y *= _SQRT_2_OVER_PI * _GELU_CUBIC
    y += _SQRT_2_OVER_PI
    y *= x  # u = k x (1 + c x^2) = k (x + c x^3)
    xp.tanh(y, out=y)  # t = tanh(u)
    y += 1.0
    y *= x
    y *= 0.5  # y = 0.5 x (1 + t)


def _gelu_tanh_backward_kernel(x, dy, dx):
    """dx = dy * dGELU/dx for the tanh form, block by block (x, dy, dx: 1-D blocks of the same size)."""
    xp = backend.array_module(x)
    # forward: y = 0.5 x (1 + t), t = tanh(u), u = k (x + c x^3)
    # dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,  du/dx = k (1 + 3 c x^2)
    x2 = x * x
    t = x2 * (_SQRT_2_OVER_PI * _GELU_CUBIC)
    t += _SQRT_2_OVER_PI
    t *= x
    xp.tanh(t, out=t)  # t = tanh(u), recomputed (the cache keeps only x)
    x2 *= 3.0 * _SQRT_2_OVER_PI * _GELU_CUBIC
    x2 += _SQRT_2_OVER_PI  # du/dx
    x2 *= x
    x2 *= 0.5  # 0.5 x du/dx
    xp.multiply(t, t, out=dx)
    xp.subtract(1.0, dx, out=dx)  # 1 - t^2
    x2 *= dx  # 0.5 x (1 - t^2) du/dx
    t += 1.0
    t *= 0.5
    t += x2  # dy/dx
    xp.multiply(dy, t, out=dx)


def gelu_backward(dy, cache: GeluCache):
    """dy: (...) -> dx: (...)."""
    x, approximate = cache
    xp = backend.array_module(x)
    if approximate == "tanh":
        # forward: y = 0.5 x (1 + t), t = tanh(u), u = k (x + c x^3)
        # dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)    (_gelu_tanh_backward_kernel, block by block)
        dy = xp.ascontiguousarray(dy)
        dx = xp.empty(x.shape, dtype=xp.result_type(dy, x))
        backend.blockwise(_gelu_tanh_backward_kernel, x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
        return dx
    # forward: y = x Phi(x), Phi(x) = 0.5 (1 + erf(x / sqrt 2))
    # dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    cdf = 0.5 * (1.0 + erf(x * _INV_SQRT2))
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    local = cdf + x * pdf
    return dy * local


# ---------------------------------------------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------------------------------------------
class ReluCache(NamedTuple):
    positive: object  # (...) bool: x > 0


def relu_forward(x):
    """y = max(x, 0). x: (...) float -> y: (...), cache."""
    _check_float("relu", "x", x)
    positive = x > 0
    xp = backend.array_module(x)
    y = xp.where(positive, x, 0.0)
    return y, ReluCache(positive)


def relu_backward(dy, cache: ReluCache):
    """dy: (...) -> dx: (...). The subgradient at x == 0 is taken as 0."""
    # forward: y = x where x > 0 else 0  ->  dy/dx = 1 where x > 0 else 0
    xp = backend.array_module(dy)
    return xp.where(cache.positive, dy, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g)
# ---------------------------------------------------------------------------------------------------------------
def _sigmoid(g):
    """Stable logistic: never evaluates exp of a positive number."""
    xp = backend.array_module(g)
    e = xp.exp(-xp.abs(g))  # in (0, 1]
    return xp.where(g >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class SwigluCache(NamedTuple):
    gate: object
    up: object


def swiglu_forward(gate, up):
    """y = silu(gate) * up.

    gate, up: (...) float, same shape and dtype (in a Transformer MLP: (B, T, 4C)) -> y: (...), cache.
    """
    _check_float("swiglu", "gate", gate)
    _check_float("swiglu", "up", up)
    if tuple(gate.shape) != tuple(up.shape):
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if gate.dtype != up.dtype:
        raise TypeError(f"swiglu: gate is {gate.dtype} but up is {up.dtype}; they must match")
    y = gate * _sigmoid(gate) * up
    return y, SwigluCache(gate, up)


def swiglu_backward(dy, cache: SwigluCache):
    """dy: (...) -> dgate: (...), dup: (...)."""
    gate, up = cache
    s = _sigmoid(gate)
    silu = gate * s
    # forward: y = silu * up
    dup = dy * silu
    dsilu = dy * up
    # forward: silu = g * s(g), s' = s (1 - s)  ->  dsilu/dg = s + g s (1 - s) = s (1 + g (1 - s))
    dgate = dsilu * s * (1.0 + gate * (1.0 - s))
    return dgate, dup


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
    _check_float("softmax", "x", x)
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
    """dy: (...) -> dx: (...)."""
    y, axis = cache
    # forward: y_i = exp(x_i) / sum_j exp(x_j)  ->  dy_i/dx_k = y_i (delta_ik - y_k)
    # dL/dx_k = sum_i dy_i y_i (delta_ik - y_k) = y_k (dy_k - sum_i dy_i y_i)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


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
    _check_float("dropout", "x", x)
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
    """dy: (...) -> dx: (...)."""
    # forward: y = x * mask  ->  dx = dy * mask  (the same mask; the identity when p == 0)
    if cache.mask is None:
        return dy
    return dy * cache.mask
