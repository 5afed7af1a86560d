"""The fast tier's GELU: the tanh form computed in place over cache-sized blocks, spread over threads.

Why: the reference's tanh GELU (npformer.functional.activations, where its derivative is derived) makes about
seven full-size temporaries forward and ten backward; these kernels make every pass inside one block of the
output, with no temporaries in the forward and two block-sized ones in the backward. The exact (erf) form has no
fast kernel: it runs the reference. Same signatures and caches; tested equal to the reference.
"""

from __future__ import annotations

from ..backend import array_module
from ..functional import activations as reference
from ..functional.activations import GELU_CUBIC, SQRT_2_OVER_PI, GeluCache, check_gelu_inputs
from .cpu import blockwise


def gelu_forward(x, approximate: str = "tanh"):
    """GELU; the tanh form in place, block by block. x: (...) float -> y: (...), cache (as the reference)."""
    check_gelu_inputs(x, approximate)
    if approximate != "tanh":
        return reference.gelu_forward(x, approximate)
    xp = array_module(x)
    x = xp.ascontiguousarray(x)
    y = xp.empty_like(x)
    blockwise(_gelu_tanh_kernel, x.reshape(-1), y.reshape(-1))
    return y, GeluCache(x, approximate)


def gelu_backward(dy, cache: GeluCache):
    """dy: (...) -> dx: (...); the tanh form block by block."""
    x, approximate = cache
    if approximate != "tanh":
        return reference.gelu_backward(dy, cache)
    xp = array_module(x)
    dy = xp.ascontiguousarray(dy)
    dx = xp.empty(x.shape, dtype=xp.result_type(dy, x))
    blockwise(_gelu_tanh_backward_kernel, x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
    return dx


def _gelu_tanh_kernel(x, y):
    """y = 0.5 x (1 + tanh(k x (1 + c x^2))) into y, with no temporaries (x, y: 1-D blocks)."""
    xp = array_module(x)
    xp.multiply(x, x, out=y)  # x^2
    y *= SQRT_2_OVER_PI * GELU_CUBIC
    y += SQRT_2_OVER_PI
    y *= x  # u = k x (1 + c x^2) = k (x + c x^3)
    xp.tanh(y, out=y)  # t = tanh(u)
    y += 1.0
    y *= x
    y *= 0.5  # y = 0.5 x (1 + t)


def _gelu_tanh_backward_kernel(x, dy, dx):
    """dx = dy * dGELU/dx for the tanh form, block by block (x, dy, dx: 1-D blocks of the same size)."""
    xp = array_module(x)
    # forward: y = 0.5 x (1 + t), t = tanh(u), u = k (x + c x^3)
    # dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,  du/dx = k (1 + 3 c x^2)
    x2 = x * x
    t = x2 * (SQRT_2_OVER_PI * GELU_CUBIC)
    t += SQRT_2_OVER_PI
    t *= x
    xp.tanh(t, out=t)  # t = tanh(u), recomputed (the cache keeps only x)
    x2 *= 3.0 * SQRT_2_OVER_PI * GELU_CUBIC
    x2 += SQRT_2_OVER_PI  # du/dx
    x2 *= x
    x2 *= 0.5  # 0.5 x du/dx
    xp.multiply(t, t, out=dx)
    xp.subtract(1.0, dx, out=dx)  # 1 - t^2
    x2 *= dx  # 0.5 x (1 - t^2) du/dx
    t += 1.0
    t *= 0.5
    t += x2  # dy/dx
    xp.multiply(dy, t, out=dx)
