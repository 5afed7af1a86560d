"""GELU (both forms), ReLU, SwiGLU: references, properties, gradients against finite differences, dtypes, bad
inputs, and (optionally) PyTorch as an oracle. (erf, softmax and dropout have files of their own.)"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, normal_array, seeds, shapes

DTYPES = [np.float32, np.float64]
math_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_reference(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + math_erf(x / math.sqrt(2.0)))


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
# dtypes and bad inputs
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
