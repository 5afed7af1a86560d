"""Dropout as a layer: active in training mode with p > 0, the identity otherwise."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..kernels import ops
from .module import Module


class Dropout(Module):
    """Inverted dropout.  x: any shape.

    Each forward draws a fresh mask seed from a host NumPy generator seeded with ``seed``; the mask itself is drawn
    on the active backend from that seed. Two things follow: the generator's state is plain data on any backend
    (checkpoints resume exactly), and a forward can be replayed with the same mask (activation recomputation sets
    ``replay_last()`` before running a block's forward again).
    """

    caches = ("_cache",)  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, p: float = 0.0, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self.seeds = np.random.default_rng(seed)  # host stream of per-forward mask seeds
        self._last_seed = None
        self._replay = False
        self._cache = None

    def replay_last(self) -> None:
        """Make the next forward reuse the mask of the last one."""
        self._replay = self._last_seed is not None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._cache = None
            return x
        if not self._replay:
            self._last_seed = int(self.seeds.integers(0, 2**62))
        self._replay = False
        y, self._cache = ops.dropout_forward(x, self.p, backend.Generator(self._last_seed))
        return y

    def backward(self, dy):
        if self._cache is None:
            return dy
        dx = ops.dropout_backward(dy, self._cache)
        self._cache = None
        return dx
