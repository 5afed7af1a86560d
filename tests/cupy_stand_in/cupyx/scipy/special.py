"""The stand-in's cupyx.scipy.special.erf: math.erf, elementwise, on the device array's values."""

import math

import cupy as _cupy
import numpy as _np

_erf = _np.vectorize(math.erf, otypes=[_np.float64])


def erf(x):
    if not isinstance(x, _cupy.ndarray):
        raise TypeError("cupyx.scipy.special.erf: x must be a CuPy array")
    return _cupy.asarray(_erf(x._a).astype(x.dtype))
