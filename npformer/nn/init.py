"""Weight initialisation: drawn on the host with a seeded NumPy generator, then moved to the active backend,
so a seed means the same model on NumPy and on CuPy."""

from __future__ import annotations

import numpy as np

from .. import backend


def normal(rng: np.random.Generator, shape, std: float = 0.02):
    """Normal(0, std) weights of ``shape`` in the active float dtype, on the active backend."""
    host = rng.standard_normal(shape) * std
    return backend.asarray(host, dtype=backend.float_dtype())


def zeros(shape):
    return backend.xp().zeros(shape, dtype=backend.float_dtype())


def ones(shape):
    return backend.xp().ones(shape, dtype=backend.float_dtype())


def as_rng(rng) -> np.random.Generator:
    """Accept a NumPy Generator, an int seed, or None (seed 0: layers built without a seed are still reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)
