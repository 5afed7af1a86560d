"""Elementwise activations: GELU (tanh and exact forms), ReLU and SwiGLU, each a forward/backward pair.

Shapes: any (...) unless stated; outputs and gradients have the input's shape and dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .. import backend
from .erf import erf


def check_float(op: str, name: str, a) -> None:
    if getattr(a, "dtype", None) is None or a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a float array, got {getattr(a, 'dtype', type(a).__name__)}")


# ---------------------------------------------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------------------------------------------
GELU_MODES = ("tanh", "none")
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # k
GELU_CUBIC = 0.044715  # c
INV_SQRT2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluCache(NamedTuple):
    x: object  # (...) the input: the backward recomputes what it needs from it
    approximate: str


def check_gelu_inputs(x, approximate: str) -> None:
    if approximate not in GELU_MODES:
        raise ValueError(f"gelu: approximate must be one of {GELU_MODES}, got {approximate!r}")
    check_float("gelu", "x", x)


def gelu_forward(x, approximate: str = "tanh"):
    """GELU. approximate="tanh" (GPT-2's): 0.5 x (1 + tanh(k (x + c x^3))), k = sqrt(2/pi), c = 0.044715;
    approximate="none" (exact): x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).

    x: (...) float -> y: (...), cache.
    """
    check_gelu_inputs(x, approximate)
    xp = backend.array_module(x)
    if approximate == "tanh":
        u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)
        y = 0.5 * x * (1.0 + xp.tanh(u))
    else:
        y = 0.5 * x * (1.0 + erf(x * INV_SQRT2))
    return y, GeluCache(x, approximate)


def gelu_backward(dy, cache: GeluCache):
    """dy: (...) -> dx: (...).

    Derivation, tanh form. The forward was  u = k (x + c x^3);  t = tanh(u);  y = 0.5 x (1 + t).
        product rule:   dy/dx = 0.5 (1 + t) + 0.5 x dt/dx
        tanh:           dt/dx = (1 - t^2) du/dx,   du/dx = k (1 + 3 c x^2)
        so              dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2))
    Exact form. The forward was  y = x Phi(x), Phi the standard normal CDF, whose derivative is the density phi:
        dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    """
    x, approximate = cache
    xp = backend.array_module(x)
    if approximate == "tanh":
        u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)
        t = xp.tanh(u)
        du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x)
        dy_dx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx
    else:
        cdf = 0.5 * (1.0 + erf(x * INV_SQRT2))
        pdf = INV_SQRT_2PI * xp.exp(-0.5 * x * x)
        dy_dx = cdf + x * pdf
    return dy * dy_dx


# ---------------------------------------------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------------------------------------------
class ReluCache(NamedTuple):
    positive: object  # (...) bool: x > 0


def relu_forward(x):
    """y = max(x, 0). x: (...) float -> y: (...), cache."""
    check_float("relu", "x", x)
    positive = x > 0
    xp = backend.array_module(x)
    y = xp.where(positive, x, 0.0)
    return y, ReluCache(positive)


def relu_backward(dy, cache: ReluCache):
    """dy: (...) -> dx: (...).

    Derivation. The forward was  y = x where x > 0, else 0:  dy/dx = 1 where x > 0, else 0 (the subgradient at
    x == 0 is taken as 0). So dx = dy where x > 0, else 0.
    """
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
    check_float("swiglu", "gate", gate)
    check_float("swiglu", "up", up)
    if tuple(gate.shape) != tuple(up.shape):
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if gate.dtype != up.dtype:
        raise TypeError(f"swiglu: gate is {gate.dtype} but up is {up.dtype}; they must match")
    y = gate * _sigmoid(gate) * up
    return y, SwigluCache(gate, up)


def swiglu_backward(dy, cache: SwigluCache):
    """dy: (...) -> dgate: (...), dup: (...).

    Derivation. The forward was  s = sigmoid(g);  silu = g * s;  y = silu * up.
        product:     dL/dup = dy * silu;   dL/dsilu = dy * up
        product:     dsilu/dg = s + g * ds/dg,   and the logistic's derivative is ds/dg = s (1 - s)
        so           dL/dg = dL/dsilu * s * (1 + g (1 - s))
    """
    gate, up = cache
    s = _sigmoid(gate)
    silu = gate * s
    dup = dy * silu
    dsilu = dy * up
    dgate = dsilu * s * (1.0 + gate * (1.0 - s))
    return dgate, dup
