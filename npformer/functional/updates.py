"""Optimizer updates written as their maths: one AdamW step on one array of parameters.

The optimizers (npformer.train.optim) own the state and the parameter groups and call this through the kernel
dispatch; the fast tier's version (npformer.kernels.adamw) makes the same step in place, block by block.

Shapes: p, g, m, v all the same shape (one parameter, or a whole flat buffer of them).
"""

from __future__ import annotations

from .. import backend


def adamw_update(p, g, m, v, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                 step: int) -> None:
    """One AdamW step (torch.optim.AdamW, amsgrad off), in place on the parameters p and the moments m, v.

    p: parameters; g: their gradient; m, v: first and second moments (zeros before step 1); step: t, from 1.

        p = p - lr * weight_decay * p                      decoupled weight decay, before the Adam step
        m = beta1 * m + (1 - beta1) * g                    running mean of the gradient
        v = beta2 * v + (1 - beta2) * g^2                  running mean of its square
        m_hat = m / (1 - beta1^t);  v_hat = v / (1 - beta2^t)     bias corrections (both start at 0)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    """
    xp = backend.array_module(p)
    p -= (lr * weight_decay) * p
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * (g * g)
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    p -= lr * m_hat / (xp.sqrt(v_hat) + eps)
