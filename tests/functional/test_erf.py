"""erf (the one GELU's exact form needs): our own float64 and float32 versions against the C library, on every
backend."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.functional.erf import _erf_numpy

from ..strategies import floats_array, shapes

DTYPES = [np.float32, np.float64]
math_erf = np.vectorize(math.erf, otypes=[np.float64])


def test_numpy_erf_float32_is_accurate_to_a_few_ulp():
    # the float32 path (A&S 7.1.26 in float32) against the C library's erf; it must stay float32
    x = np.linspace(-7.0, 7.0, 100_001).astype(np.float32)
    y = _erf_numpy(x)
    assert y.dtype == np.float32
    assert np.abs(y.astype(np.float64) - math_erf(x.astype(np.float64))).max() < 6e-7


def test_numpy_erf_matches_math_erf():
    # our own float64 erf (used when SciPy is absent) against the C library, across both branches and the split
    x = np.concatenate([np.linspace(-9.0, 9.0, 40001), [0.0, -0.0, 1e-300, 2.5, np.nextafter(2.5, 0), 1e300]])
    ref = math_erf(x)
    err = np.abs(_erf_numpy(x) - ref) / np.maximum(np.abs(ref), 1e-300)
    assert err.max() < 1e-14, f"max relative error {err.max():.3e} at x={x[err.argmax()]}"
    assert _erf_numpy(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]


@given(data=st.data(), shape=shapes(min_dims=0, max_dims=3), dtype=st.sampled_from(DTYPES))
def test_erf_on_backend(xp_backend, data, shape, dtype):
    x = data.draw(floats_array(shape, dtype, bound=6.0))
    out = F.erf(backend.asarray(x))
    assert out.dtype == np.dtype(dtype) and out.shape == x.shape
    tol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(backend.to_numpy(out), math_erf(x.astype(np.float64)), rtol=tol, atol=tol)
    np.testing.assert_allclose(_erf_numpy(x), math_erf(x.astype(np.float64)), rtol=tol, atol=tol)
