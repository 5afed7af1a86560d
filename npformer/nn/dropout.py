"""Dropout as a layer: active in training mode with p > 0, the identity otherwise."""

from __future__ import annotations

from .. import backend
from .. import functional as F
from .module import Module


class Dropout(Module):
    """Inverted dropout.  x: any shape.  Draws its masks from its own seeded backend generator."""

    def __init__(self, p: float = 0.0, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self._rng = None
        self._cache = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._cache = None
            return x
        if self._rng is None:  # created on first use, on the backend active then
            self._rng = backend.rng(self.seed)
        y, self._cache = F.dropout_forward(x, self.p, self._rng)
        return y

    def backward(self, dy):
        if self._cache is None:
            return dy
        dx = F.dropout_backward(dy, self._cache)
        self._cache = None
        return dx
