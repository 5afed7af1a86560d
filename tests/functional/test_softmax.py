"""Softmax: sums to one, shift invariance, gradients against finite differences, fully masked rows, dtypes and
bad inputs."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, floats_array, normal_array, seeds, shapes

DTYPES = [np.float32, np.float64]


@st.composite
def softmax_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return shape, axis


@given(data=st.data(), case=softmax_case(), dtype=st.sampled_from(DTYPES))
def test_softmax_sums_to_one(xp_backend, data, case, dtype):
    shape, axis = case
    x = data.draw(floats_array(shape, dtype, bound=1e4))
    y, _ = F.softmax_forward(backend.asarray(x), axis=axis)
    y = backend.to_numpy(y)
    assert y.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=TOL[np.dtype(dtype)][0] * 10)


@given(case=softmax_case(), seed=seeds(), shift=st.floats(-1e3, 1e3))
def test_softmax_shift_invariant(xp_backend, case, seed, shift):
    shape, axis = case
    x = normal_array(seed, shape, scale=3.0)
    y, _ = F.softmax_forward(backend.asarray(x), axis=axis)
    y_shifted, _ = F.softmax_forward(backend.asarray(x + shift), axis=axis)
    # x + shift rounds x to the shift's precision (|shift| * 2^-52 absolutely): compare with that allowance
    np.testing.assert_allclose(backend.to_numpy(y_shifted), backend.to_numpy(y), rtol=1e-12 + 4e-16 * abs(shift),
                               atol=1e-15)
    expected = np.exp(x - x.max(axis=axis, keepdims=True))
    expected /= expected.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(backend.to_numpy(y), expected, *TOL[np.dtype(np.float64)])


@given(case=softmax_case(), seed=seeds())
def test_softmax_gradients(xp_backend, case, seed):
    shape, axis = case
    report = check_gradients(lambda x: F.softmax_forward(x, axis), F.softmax_backward,
                             dict(x=backend.asarray(normal_array(seed, shape, scale=2.0))), wrt=("x",),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


def test_softmax_fully_masked_row_is_zero_not_nan(xp_backend):
    x = backend.asarray(np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]]))
    y, cache = F.softmax_forward(x)
    y = backend.to_numpy(y)
    np.testing.assert_allclose(y[0], [1 / (1 + math.e), 0.0, math.e / (1 + math.e)])
    np.testing.assert_array_equal(y[1], 0.0)
    dx = backend.to_numpy(F.softmax_backward(backend.asarray(np.ones((2, 3))), cache))
    assert np.all(np.isfinite(dx))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(xp_backend, dtype):
    x = backend.asarray(normal_array(0, (2, 3, 4), dtype))
    dy = backend.asarray(normal_array(1, (2, 3, 4), dtype))
    y, cache = F.softmax_forward(x, axis=1)
    dx = F.softmax_backward(dy, cache)
    assert y.dtype == dx.dtype == np.dtype(dtype) and y.shape == dx.shape == (2, 3, 4)


def test_bad_inputs(xp_backend):
    x = backend.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"softmax: axis 2 is out of range for x with 2 axes"):
        F.softmax_forward(x, axis=2)
    with pytest.raises(ValueError, match=r"softmax: x must have at least one axis"):
        F.softmax_forward(backend.asarray(np.float64(1.0)))
    with pytest.raises(TypeError, match=r"softmax: x must be a float array"):
        F.softmax_forward(backend.asarray(np.zeros(3, np.int64)))
