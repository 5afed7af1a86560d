"""LayerNorm and RMSNorm: normalisation properties, gradients against finite differences, dtypes, bad inputs,
and (optionally) PyTorch as an oracle."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, dims, floats_array, normal_array, seeds, shapes

DTYPES = [np.float32, np.float64]


def x_shapes():
    """(..., C): zero to two leading axes, C from 1 to 6."""
    return st.tuples(shapes(min_dims=0, max_dims=2, max_side=4), dims(1, 6)).map(lambda t: t[0] + (t[1],))


# ---------------------------------------------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------------------------------------------
@given(data=st.data(), shape=x_shapes().filter(lambda s: s[-1] >= 2))
def test_layernorm_output_is_standardised(xp_backend, data, shape):
    x = data.draw(floats_array(shape, bound=100.0))
    # a row must not be (nearly) constant: its variance must dominate eps = 1e-5 (std 0.2: eps's share of the
    # variance below is at most 2.5e-4, inside the rtol of 1e-3 of the last check)
    assume(np.all(x.std(axis=-1) > 0.2))
    c = shape[-1]
    y, _ = F.layernorm_forward(backend.asarray(x), backend.asarray(np.ones(c)), backend.asarray(np.zeros(c)))
    y = backend.to_numpy(y)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-9)
    var = x.var(axis=-1)
    # the biased variance of y is var / (var + eps): 1 up to eps's share
    np.testing.assert_allclose(y.var(axis=-1), var / (var + 1e-5), rtol=1e-9)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-3)


@given(shape=x_shapes(), seed=seeds(), scale=st.sampled_from([1e-2, 1.0, 100.0]))
def test_layernorm_gradients(xp_backend, shape, seed, scale):
    c = shape[-1]
    inputs = dict(x=backend.asarray(normal_array(seed, shape, scale=scale)),
                  w=backend.asarray(normal_array(seed + 1, (c,))), b=backend.asarray(normal_array(seed + 2, (c,))))
    # float64 central differences, normwise relative error <= GRAD_RTOL (1e-6) or abs <= GRAD_ATOL (1e-8)
    report = check_gradients(F.layernorm_forward, F.layernorm_backward, inputs, wrt=("x", "w", "b"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@given(shape=x_shapes(), seed=seeds())
def test_layernorm_matches_reference(xp_backend, shape, seed):
    c = shape[-1]
    x, w, b = normal_array(seed, shape), normal_array(seed + 1, (c,)), normal_array(seed + 2, (c,))
    y, _ = F.layernorm_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b), eps=1e-5)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(backend.to_numpy(y), expected, *TOL[np.dtype(np.float64)])


# ---------------------------------------------------------------------------------------------------------------
# RMSNorm
# ---------------------------------------------------------------------------------------------------------------
@given(data=st.data(), shape=x_shapes())
def test_rmsnorm_output_has_unit_rms(xp_backend, data, shape):
    x = data.draw(floats_array(shape, bound=100.0))
    assume(np.all(np.sqrt((x * x).mean(axis=-1)) > 1e-1))
    c = shape[-1]
    y, _ = F.rmsnorm_forward(backend.asarray(x), backend.asarray(np.ones(c)))
    ms = (x * x).mean(axis=-1)
    np.testing.assert_allclose((backend.to_numpy(y) ** 2).mean(axis=-1), ms / (ms + 1e-6), rtol=1e-9)


@given(shape=x_shapes(), seed=seeds(), scale=st.sampled_from([1e-2, 1.0, 100.0]))
def test_rmsnorm_gradients(xp_backend, shape, seed, scale):
    c = shape[-1]
    inputs = dict(x=backend.asarray(normal_array(seed, shape, scale=scale)),
                  w=backend.asarray(normal_array(seed + 1, (c,))))
    # float64 central differences, normwise relative error <= GRAD_RTOL (1e-6) or abs <= GRAD_ATOL (1e-8)
    report = check_gradients(F.rmsnorm_forward, F.rmsnorm_backward, inputs, wrt=("x", "w"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@given(shape=x_shapes(), seed=seeds())
def test_rmsnorm_matches_reference(xp_backend, shape, seed):
    c = shape[-1]
    x, w = normal_array(seed, shape), normal_array(seed + 1, (c,))
    y, _ = F.rmsnorm_forward(backend.asarray(x), backend.asarray(w), eps=1e-6)
    expected = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(backend.to_numpy(y), expected, *TOL[np.dtype(np.float64)])


# ---------------------------------------------------------------------------------------------------------------
# both
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(xp_backend, dtype):
    x = backend.asarray(normal_array(0, (2, 3, 5), dtype))
    w, b = backend.asarray(normal_array(1, (5,), dtype)), backend.asarray(normal_array(2, (5,), dtype))
    dy = backend.asarray(normal_array(3, (2, 3, 5), dtype))
    y, cache = F.layernorm_forward(x, w, b)
    outs = [y, *F.layernorm_backward(dy, cache)]
    y, cache = F.rmsnorm_forward(x, w)
    outs += [y, *F.rmsnorm_backward(dy, cache)]
    assert [o.dtype for o in outs] == [np.dtype(dtype)] * 7
    assert [o.shape for o in outs] == [(2, 3, 5)] * 2 + [(5,)] * 2 + [(2, 3, 5)] * 2 + [(5,)]


def test_constant_rows_stay_finite(xp_backend):
    x = backend.asarray(np.full((2, 4), 3.0))
    ones, zeros = backend.asarray(np.ones(4)), backend.asarray(np.zeros(4))
    y, cache = F.layernorm_forward(x, ones, zeros)
    assert np.all(backend.to_numpy(y) == 0.0)
    assert np.all(np.isfinite(backend.to_numpy(F.layernorm_backward(backend.asarray(np.ones((2, 4))), cache)[0])))


def test_bad_inputs(xp_backend):
    x = backend.asarray(np.zeros((2, 4)))
    w4, b4 = backend.asarray(np.ones(4)), backend.asarray(np.zeros(4))
    with pytest.raises(ValueError, match=r"layernorm: w must have shape \(C,\) = \(4,\) .* got \(3,\)"):
        F.layernorm_forward(x, backend.asarray(np.ones(3)), b4)
    with pytest.raises(ValueError, match=r"layernorm: b must have shape \(C,\) = \(4,\)"):
        F.layernorm_forward(x, w4, backend.asarray(np.zeros((1, 4))))
    with pytest.raises(TypeError, match=r"layernorm: w is float32 but x is float64"):
        F.layernorm_forward(x, backend.asarray(np.ones(4, np.float32)), b4)
    with pytest.raises(TypeError, match=r"layernorm: x must be a float array, got int64"):
        F.layernorm_forward(backend.asarray(np.zeros((2, 4), np.int64)), w4, b4)
    with pytest.raises(ValueError, match=r"layernorm: eps must be >= 0"):
        F.layernorm_forward(x, w4, b4, eps=-1.0)
    with pytest.raises(ValueError, match=r"rmsnorm: w must have shape \(C,\) = \(4,\)"):
        F.rmsnorm_forward(x, backend.asarray(np.ones(5)))
    with pytest.raises(ValueError, match=r"rmsnorm: x must have a channel axis"):
        F.rmsnorm_forward(backend.asarray(np.float64(1.0)), w4)


# ---------------------------------------------------------------------------------------------------------------
# PyTorch as an oracle (float64), skipped without torch
# ---------------------------------------------------------------------------------------------------------------
@given(shape=x_shapes(), seed=seeds())
def test_layernorm_and_rmsnorm_match_torch(xp_backend, shape, seed):
    torch = pytest.importorskip("torch")
    c = shape[-1]
    x, w, b = normal_array(seed, shape), normal_array(seed + 1, (c,)), normal_array(seed + 2, (c,))
    dy = normal_array(seed + 3, shape)
    tol = TOL[np.dtype(np.float64)]

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.layer_norm(tx, (c,), tw, tb, eps=1e-5).backward(torch.tensor(dy))
    y, cache = F.layernorm_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b), eps=1e-5)
    ours = [y, *F.layernorm_backward(backend.asarray(dy), cache)]
    ref = [torch.nn.functional.layer_norm(tx, (c,), tw, tb, eps=1e-5).detach(), tx.grad, tw.grad, tb.grad]
    for name, o, r in zip(("y", "dx", "dw", "db"), ours, ref):
        np.testing.assert_allclose(backend.to_numpy(o), r.numpy(), *tol, err_msg=f"layernorm {name}")

    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.rms_norm(tx, (c,), tw, eps=1e-6)
    ty.backward(torch.tensor(dy))
    y, cache = F.rmsnorm_forward(backend.asarray(x), backend.asarray(w), eps=1e-6)
    ours = [y, *F.rmsnorm_backward(backend.asarray(dy), cache)]
    for name, o, r in zip(("y", "dx", "dw"), ours, [ty.detach(), tx.grad, tw.grad]):
        np.testing.assert_allclose(backend.to_numpy(o), r.numpy(), *tol, err_msg=f"rmsnorm {name}")
