"""The fast tier's AdamW step: the reference maths (npformer.functional.updates) in place, block by block.

Why: the reference makes six parameter-sized temporaries per step; here every pass runs inside one cache-sized
block with one block-sized scratch, and a large buffer (a flattened model: Module.flatten_parameters) is split over
threads. Same signature; tested equal to the reference.
"""

from __future__ import annotations

import math

from ..backend import array_module
from .cpu import blockwise

# 14 passes over 4 arrays per element: two threads pay off from 256K elements (0.8M: 2.6 -> 1.8 ms)
ADAMW_PARALLEL_MIN = 1 << 18


def adamw_update(p, g, m, v, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                 step: int) -> None:
    """One AdamW step in place on p, m, v (all of g's shape), as torch computes it."""
    step_size = lr / (1.0 - beta1**step)  # lr / bias_correction1
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2**step)  # 1 / sqrt(bias_correction2)

    def update(p, g, m, v):  # in place, on a block of rows
        xp = array_module(p)
        s = xp.empty_like(g)  # one block-sized scratch
        if weight_decay != 0.0:
            p *= 1.0 - lr * weight_decay  # p = p - lr * wd * p
        m *= beta1  # m = b1 * m + (1 - b1) * g
        xp.multiply(g, 1.0 - beta1, out=s)
        m += s
        v *= beta2  # v = b2 * v + (1 - b2) * g^2
        xp.multiply(g, g, out=s)
        s *= 1.0 - beta2
        v += s
        xp.sqrt(v, out=s)  # denom = sqrt(v) / sqrt(bc2) + eps
        s *= inv_bc2_sqrt
        s += eps
        xp.divide(m, s, out=s)  # p = p - step_size * m / denom
        s *= -step_size
        p += s

    blockwise(update, p, g, m, v, parallel_min=ADAMW_PARALLEL_MIN)
