"""GELU (both forms), ReLU, SwiGLU, softmax, dropout and the erf they need: references, properties, gradients
against finite differences, dtypes, bad inputs, and (optionally) PyTorch as an oracle."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.functional.activations import _erf_numpy
from npformer.gradcheck import check_gradients

from .strategies import GRAD_ATOL, GRAD_RTOL, TOL, floats_array, normal_array, seeds, shapes

DTYPES = [np.float32, np.float64]
math_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_reference(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + math_erf(x / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------------------------
# erf
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# GELU, ReLU, SwiGLU
# ---------------------------------------------------------------------------------------------------------------
@given(shape=shapes(), seed=seeds(), approximate=st.sampled_from(["tanh", "none"]))
def test_gelu_matches_reference_and_gradients(xp_backend, shape, seed, approximate):
    x = normal_array(seed, shape, scale=3.0)
    y, _ = F.gelu_forward(backend.asarray(x), approximate=approximate)
    np.testing.assert_allclose(backend.to_numpy(y), gelu_reference(x, approximate), *TOL[np.dtype(np.float64)])
    # float64 central differences, normwise relative error <= GRAD_RTOL (1e-6) or abs <= GRAD_ATOL (1e-8)
    report = check_gradients(lambda x: F.gelu_forward(x, approximate), F.gelu_backward, dict(x=backend.asarray(x)),
                             wrt=("x",), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@given(shape=shapes(), seed=seeds())
def test_relu_matches_reference_and_gradients(xp_backend, shape, seed):
    x = normal_array(seed, shape)
    x = np.where(np.abs(x) < 1e-3, 0.5, x)  # no kink within the finite-difference step
    y, _ = F.relu_forward(backend.asarray(x))
    np.testing.assert_array_equal(backend.to_numpy(y), np.maximum(x, 0.0))
    report = check_gradients(F.relu_forward, F.relu_backward, dict(x=backend.asarray(x)), wrt=("x",),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@given(shape=shapes(), seed=seeds(), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_swiglu_matches_reference_and_gradients(xp_backend, shape, seed, scale):
    gate, up = normal_array(seed, shape, scale=scale), normal_array(seed + 1, shape)
    y, _ = F.swiglu_forward(backend.asarray(gate), backend.asarray(up))
    expected = gate / (1.0 + np.exp(-gate)) * up
    np.testing.assert_allclose(backend.to_numpy(y), expected, *TOL[np.dtype(np.float64)])
    report = check_gradients(F.swiglu_forward, F.swiglu_backward,
                             dict(gate=backend.asarray(gate), up=backend.asarray(up)), wrt=("gate", "up"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_stay_finite(xp_backend, dtype):
    x = backend.asarray(np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype))
    for approximate in ("tanh", "none"):
        y, cache = F.gelu_forward(x, approximate)
        np.testing.assert_allclose(backend.to_numpy(y), [0.0, 0.0, 0.0, 50.0, 1e4])
        np.testing.assert_allclose(backend.to_numpy(F.gelu_backward(backend.xp().ones_like(x), cache)),
                                   [0.0, 0.0, 0.5, 1.0, 1.0])
    y, cache = F.swiglu_forward(x, backend.xp().ones_like(x))
    np.testing.assert_allclose(backend.to_numpy(y), [0.0, 0.0, 0.0, 50.0, 1e4], atol=1e-12)
    for g in F.swiglu_backward(backend.xp().ones_like(x), cache):
        assert np.all(np.isfinite(backend.to_numpy(g)))


# ---------------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------------------------
@given(shape=shapes(), seed=seeds(), dtype=st.sampled_from(DTYPES))
def test_dropout_p0_is_identity(xp_backend, shape, seed, dtype):
    x = backend.asarray(normal_array(seed, shape, dtype))
    y, cache = F.dropout_forward(x, 0.0, None)
    assert y is x and cache.mask is None
    dy = backend.asarray(normal_array(seed + 1, shape, dtype))
    assert F.dropout_backward(dy, cache) is dy


@given(p=st.floats(0.05, 0.9), seed=seeds(), dtype=st.sampled_from(DTYPES))
def test_dropout_preserves_mean_and_backward_uses_the_mask(xp_backend, p, seed, dtype):
    n = 20_000
    x = backend.xp().ones((4, n // 4), dtype=dtype)
    y, cache = F.dropout_forward(x, p, backend.rng(seed))
    mask = backend.to_numpy(cache.mask)
    assert y.dtype == np.dtype(dtype) and mask.dtype == np.dtype(dtype)
    # every mask value is 0 (dropped) or 1 / (1 - p) (kept)
    scale = np.asarray(1.0 / (1.0 - p), dtype=dtype)
    assert np.all((mask == 0) | (mask == scale))
    # E[y] = x: the sample mean of y is within 6 standard errors of 1 (std of one y is sqrt(p / (1 - p)))
    assert abs(float(backend.to_numpy(y).astype(np.float64).mean()) - 1.0) < 6 * math.sqrt(p / (1 - p) / n)
    kept = float((mask != 0).mean())
    assert abs(kept - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    dy = normal_array(seed, x.shape, dtype)
    dx = F.dropout_backward(backend.asarray(dy), cache)
    assert dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(backend.to_numpy(dx), dy * mask)


def test_dropout_same_seed_same_mask(xp_backend):
    x = backend.asarray(normal_array(0, (3, 7)))
    y1, _ = F.dropout_forward(x, 0.5, backend.rng(5))
    y2, _ = F.dropout_forward(x, 0.5, backend.rng(5))
    np.testing.assert_array_equal(backend.to_numpy(y1), backend.to_numpy(y2))


# ---------------------------------------------------------------------------------------------------------------
# dtypes and bad inputs for the whole module
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(xp_backend, dtype):
    x = backend.asarray(normal_array(0, (2, 3, 4), dtype))
    dy = backend.asarray(normal_array(1, (2, 3, 4), dtype))
    outs = []
    for approximate in ("tanh", "none"):
        y, cache = F.gelu_forward(x, approximate)
        outs += [y, F.gelu_backward(dy, cache)]
    y, cache = F.relu_forward(x)
    outs += [y, F.relu_backward(dy, cache)]
    y, cache = F.swiglu_forward(x, dy)
    outs += [y, *F.swiglu_backward(dy, cache)]
    y, cache = F.softmax_forward(x, axis=1)
    outs += [y, F.softmax_backward(dy, cache)]
    y, cache = F.dropout_forward(x, 0.3, backend.rng(0))
    outs += [y, F.dropout_backward(dy, cache), cache.mask]
    assert [o.dtype for o in outs] == [np.dtype(dtype)] * len(outs)
    assert all(o.shape == (2, 3, 4) for o in outs)


def test_bad_inputs(xp_backend):
    x = backend.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"gelu: approximate must be one of \('tanh', 'none'\), got 'erf'"):
        F.gelu_forward(x, approximate="erf")
    with pytest.raises(TypeError, match=r"gelu: x must be a float array, got int64"):
        F.gelu_forward(backend.asarray(np.zeros(3, np.int64)))
    with pytest.raises(TypeError, match=r"relu: x must be a float array"):
        F.relu_forward(backend.asarray(np.zeros(3, np.int32)))
    with pytest.raises(ValueError, match=r"swiglu: gate \(2, 3\) and up \(3, 2\) must have the same shape"):
        F.swiglu_forward(x, backend.asarray(np.zeros((3, 2))))
    with pytest.raises(TypeError, match=r"swiglu: gate is float64 but up is float32"):
        F.swiglu_forward(x, backend.asarray(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"softmax: axis 2 is out of range for x with 2 axes"):
        F.softmax_forward(x, axis=2)
    with pytest.raises(ValueError, match=r"softmax: x must have at least one axis"):
        F.softmax_forward(backend.asarray(np.float64(1.0)))
    for p in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\)"):
            F.dropout_forward(x, p, backend.rng(0))
    with pytest.raises(TypeError, match=r"dropout: rng must be a backend.Generator when p > 0, got NoneType"):
        F.dropout_forward(x, 0.5, None)


# ---------------------------------------------------------------------------------------------------------------
# PyTorch as an oracle (float64), skipped without torch
# ---------------------------------------------------------------------------------------------------------------
@given(shape=shapes(), seed=seeds(), approximate=st.sampled_from(["tanh", "none"]))
def test_gelu_matches_torch(xp_backend, shape, seed, approximate):
    torch = pytest.importorskip("torch")
    x, dy = normal_array(seed, shape, scale=3.0), normal_array(seed + 1, shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.gelu(tx, approximate=approximate)
    ty.backward(torch.tensor(dy))
    y, cache = F.gelu_forward(backend.asarray(x), approximate)
    dx = F.gelu_backward(backend.asarray(dy), cache)
    tol = TOL[np.dtype(np.float64)]
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), *tol)
    np.testing.assert_allclose(backend.to_numpy(dx), tx.grad.numpy(), *tol)
