"""The fixed sinusoidal position table as a layer without parameters (the original Transformer's positions)."""

from __future__ import annotations

from ..kernels import ops


class SinusoidalTable:
    """Rows of the (T, C) sinusoidal table, built once and rebuilt only when a longer span or another dtype is
    asked for (after ``Module.astype``, say). Not a Module: it has nothing to train or save."""

    def __init__(self, dim: int, min_len: int = 0):
        self.dim, self.min_len = dim, min_len
        self._table = None

    def rows(self, start: int, stop: int, dtype):
        """Positions start..stop-1 -> (stop - start, C) in ``dtype`` on the active backend."""
        t = self._table
        if t is None or t.shape[0] < stop or t.dtype != dtype:
            self._table = ops.sinusoidal_positions(max(stop, self.min_len), self.dim, dtype=dtype)
        return self._table[start:stop]
