"""The error function, which NumPy lacks (exact GELU needs it).

CuPy has cupyx.scipy.special.erf; SciPy, when installed (it is optional), has scipy.special.erf; otherwise erf is
evaluated here from classical expansions.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np  # the NumPy-only evaluation below; CuPy arrays go to cupyx

from .. import backend

_ERF_SPLIT = 2.5  # series below, continued fraction above
_ERF_SERIES_TERMS = 40  # enough for |x| < 2.5 in float64 (relative error ~1e-16)
_ERF_CF_TERMS = 30  # enough for |x| >= 2.5 (faster convergence the larger |x|)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ONE_OVER_SQRT_PI = 1.0 / math.sqrt(math.pi)


@functools.lru_cache(maxsize=None)
def _scipy_erf():
    """scipy.special.erf if SciPy is installed, else None (looked up once)."""
    if importlib.util.find_spec("scipy") is None:
        return None
    try:
        from scipy.special import erf as scipy_erf
    except Exception:  # a broken SciPy install: fall back to our own
        return None
    return scipy_erf


def _erf_series(a):
    """erf(a) for 0 <= a < ~3 from the all-positive series (A&S 7.1.6), with no cancellation:
    erf(a) = 2/sqrt(pi) * exp(-a^2) * sum_n (2 a^2)^n * a / (1 * 3 * ... * (2n + 1)), summed Horner-style."""
    t = 2.0 * a * a
    s = np.ones_like(a)
    for n in range(_ERF_SERIES_TERMS, 0, -1):
        s = 1.0 + s * (t * (1.0 / (2 * n + 1)))
    return _TWO_OVER_SQRT_PI * a * np.exp(-a * a) * s


def _erfc_continued_fraction(a):
    """erfc(a) for a >= ~2 from the continued fraction (A&S 7.1.14), evaluated from the tail:
    erfc(a) = exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + 2 / (a + ...)))))."""
    a = np.minimum(a, 30.0)  # erfc(30) underflows to 0 anyway; keeps a*a finite for huge inputs
    f = a.copy()
    for k in range(_ERF_CF_TERMS, 0, -1):
        f = a + (0.5 * k) / f
    return _ONE_OVER_SQRT_PI * np.exp(-a * a) / f


# Abramowitz & Stegun 7.1.26: erf(a) = 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-a^2), t = 1 / (1 + p a),
# for a >= 0, with |error| <= 1.5e-7 in exact arithmetic; evaluated in float32 the error stays below 6e-7 (a few
# float32 ulp; tested against math.erf), in ~12 passes instead of the float64 path's ~120.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf_float32(x):
    """erf for float32 arrays (A&S 7.1.26; accurate to float32 precision), computed in float32."""
    a = np.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    poly = np.full_like(a, _AS_A[4])
    for coeff in _AS_A[3::-1]:  # Horner: ((a5 t + a4) t + a3) t ...
        poly *= t
        poly += coeff
    poly *= t
    poly *= np.exp(-(a * a))
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, x)  # erf is odd


def _erf_numpy(x):
    if x.dtype == np.float32:
        return _erf_float32(x)
    flat = x.reshape(-1)
    a = np.abs(flat)
    out = np.empty_like(a)
    small = a < _ERF_SPLIT
    out[small] = _erf_series(a[small])
    large = ~small
    out[large] = 1.0 - _erfc_continued_fraction(a[large])
    return np.copysign(out, flat).reshape(x.shape)  # erf is odd


def erf(x):
    """The error function, elementwise, in x's dtype, on x's backend.

    CuPy: cupyx.scipy.special.erf. NumPy: scipy.special.erf when SciPy is installed, else our own evaluation:
    in float64 to a few ulp (series and continued fraction: slow, for gradient checks), in float32 to a few
    float32 ulp (|error| < 6e-7, A&S 7.1.26: ten times faster, for training).
    """
    xp = backend.array_module(x)
    if xp is not np:
        import cupyx.scipy.special  # only reached for CuPy arrays

        return cupyx.scipy.special.erf(x)
    scipy_erf = _scipy_erf()
    if scipy_erf is not None:
        return scipy_erf(x)
    return _erf_numpy(np.asarray(x))


