"""Linear and Embedding layers: parameters plus the functional pairs of npformer.functional.linear."""

from __future__ import annotations

from ..kernels import ops
from . import init
from .module import Module, Parameter


class Linear(Module):
    """y = x @ w + b.  x: (..., C_in) -> y: (..., C_out).  w: (C_in, C_out), b: (C_out,) or absent.

    w is stored (C_in, C_out) (llm.c stores it transposed) so the forward is one plain x @ w.
    """

    caches = ("_cache",)

    def __init__(self, c_in: int, c_out: int, bias: bool = True, std: float = 0.02, rng=None):
        rng = init.as_rng(rng)
        self.weight = Parameter(init.normal(rng, (c_in, c_out), std))
        self.bias = Parameter(init.zeros((c_out,))) if bias else None
        self._cache = None

    def forward(self, x):
        y, self._cache = ops.linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        return y

    def backward(self, dy):
        dx, dw, db = ops.linear_backward(dy, self._cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        self._cache = None
        return dx


class Embedding(Module):
    """A lookup table.  ids: integer (...) -> y: (..., C).  weight: (V, C)."""

    caches = ("_cache",)

    def __init__(self, vocab_size: int, dim: int, std: float = 0.02, rng=None):
        rng = init.as_rng(rng)
        self.weight = Parameter(init.normal(rng, (vocab_size, dim), std), no_decay=False)
        self._cache = None

    def forward(self, ids):
        y, self._cache = ops.embedding_forward(ids, self.weight.data)  # validates ids (integer, in range)
        return y

    def backward(self, dy) -> None:
        # the rows of dy are scattered straight into .grad (repeated ids accumulate): no (V, C) temporary
        ops.embedding_backward(dy, self._cache, dtable=self.weight.grad)
        self._cache = None
        return None
