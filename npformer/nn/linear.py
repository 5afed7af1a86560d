"""Linear and Embedding layers: parameters plus the functional pairs of npformer.functional.linear."""

from __future__ import annotations

from .. import backend
from .. import functional as F
from . import init
from .module import Module, Parameter


class Linear(Module):
    """y = x @ w + b.  x: (..., C_in) -> y: (..., C_out).  w: (C_in, C_out), b: (C_out,) or absent.

    w is stored (C_in, C_out) (llm.c stores it transposed) so the forward is one plain x @ w.
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = True, std: float = 0.02, rng=None):
        rng = init.as_rng(rng)
        self.weight = Parameter(init.normal(rng, (c_in, c_out), std))
        self.bias = Parameter(init.zeros((c_out,))) if bias else None
        self._cache = None

    def forward(self, x):
        y, self._cache = F.linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        return y

    def backward(self, dy):
        dx, dw, db = F.linear_backward(dy, self._cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        self._cache = None
        return dx


class Embedding(Module):
    """A lookup table.  ids: integer (...) -> y: (..., C).  weight: (V, C)."""

    def __init__(self, vocab_size: int, dim: int, std: float = 0.02, rng=None):
        rng = init.as_rng(rng)
        self.weight = Parameter(init.normal(rng, (vocab_size, dim), std), no_decay=False)
        self._ids = None

    def forward(self, ids):
        y, _ = F.embedding_forward(ids, self.weight.data)  # validates ids (integer, in range)
        self._ids = ids
        return y

    def backward(self, dy) -> None:
        # embedding_backward would build a dense (V, C) array only to add it to .grad; scattering the rows of dy
        # straight into .grad is the same sum (repeated ids accumulate) without the (V, C) temporary.
        backend.scatter_add(self.weight.grad, self._ids, dy)
        self._ids = None
        return None
