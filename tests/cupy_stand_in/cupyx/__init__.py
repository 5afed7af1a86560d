"""The stand-in's cupyx: scatter_add (unbuffered, repeated indices summed) and scipy.special.erf."""

import cupy as _cupy
import numpy as _np

from . import scipy  # noqa: F401


def scatter_add(a, slices, value):
    """a[slices] += value, summing repeated indices (CuPy's atomic add)."""
    if not isinstance(a, _cupy.ndarray):
        raise TypeError("cupyx.scatter_add: a must be a CuPy array")
    index = slices._a if isinstance(slices, _cupy.ndarray) else slices
    if isinstance(value, _np.ndarray):
        raise TypeError("cupyx.scatter_add: value is a NumPy array; it must be a CuPy array")
    _np.add.at(a._a, index, value._a if isinstance(value, _cupy.ndarray) else value)
