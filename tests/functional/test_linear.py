"""linear and embedding: forward against plain references, hand-written gradients against finite differences,
dtypes preserved, repeated ids accumulated, bad inputs refused by name."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, dims, normal_array, seeds, shapes

# The xp_backend fixture is per test, not per example: that is what we want (one backend for all examples).
DTYPES = [np.float32, np.float64]


def lead_shapes():
    """Leading axes (...) for (..., C): none, or up to two small uneven axes."""
    return shapes(min_dims=0, max_dims=2, max_side=4)


# ---------------------------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------------------------
@given(lead=lead_shapes(), c_in=dims(1, 4), c_out=dims(1, 4), bias=st.booleans(), seed=seeds())
def test_linear_matches_reference(xp_backend, lead, c_in, c_out, bias, seed):
    x = normal_array(seed, lead + (c_in,))
    w = normal_array(seed + 1, (c_in, c_out))
    b = normal_array(seed + 2, (c_out,)) if bias else None
    y, _ = F.linear_forward(backend.asarray(x), backend.asarray(w), None if b is None else backend.asarray(b))
    expected = np.einsum("...i,io->...o", x, w) + (0.0 if b is None else b)
    assert y.shape == lead + (c_out,)
    np.testing.assert_allclose(backend.to_numpy(y), expected, *TOL[np.dtype(np.float64)])


@given(lead=lead_shapes(), c_in=dims(1, 4), c_out=dims(1, 4), bias=st.booleans(), seed=seeds())
def test_linear_gradients(xp_backend, lead, c_in, c_out, bias, seed):
    # float64 central differences, normwise relative error <= GRAD_RTOL (1e-6) or abs <= GRAD_ATOL (1e-8)
    inputs = dict(x=backend.asarray(normal_array(seed, lead + (c_in,))),
                  w=backend.asarray(normal_array(seed + 1, (c_in, c_out))),
                  b=backend.asarray(normal_array(seed + 2, (c_out,))) if bias else None)
    report = check_gradients(F.linear_forward, F.linear_backward, inputs, wrt=("x", "w", "b"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == (["x", "w", "b"] if bias else ["x", "w"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_dtype_preserved(xp_backend, dtype, bias):
    x = backend.asarray(normal_array(0, (2, 3, 4), dtype))
    w = backend.asarray(normal_array(1, (4, 5), dtype))
    b = backend.asarray(normal_array(2, (5,), dtype)) if bias else None
    y, cache = F.linear_forward(x, w, b)
    dx, dw, db = F.linear_backward(backend.asarray(normal_array(3, (2, 3, 5), dtype)), cache)
    for a in (y, dx, dw) + ((db,) if bias else ()):
        assert a.dtype == np.dtype(dtype)
    assert (db is None) == (not bias)
    assert dx.shape == x.shape and dw.shape == w.shape


def test_linear_bad_inputs(xp_backend):
    x = backend.asarray(np.zeros((2, 3)))
    w = backend.asarray(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"linear: x has 2 input channels but w expects C_in=3"):
        F.linear_forward(backend.asarray(np.zeros((3, 2))), w)
    with pytest.raises(ValueError, match=r"linear: w must be 2-D"):
        F.linear_forward(x, backend.asarray(np.zeros(3)))
    with pytest.raises(ValueError, match=r"linear: b must have shape \(C_out,\) = \(4,\), got \(3,\)"):
        F.linear_forward(x, w, backend.asarray(np.zeros(3)))
    with pytest.raises(TypeError, match=r"linear: w is float32 but x is float64"):
        F.linear_forward(x, backend.asarray(np.zeros((3, 4), np.float32)))
    with pytest.raises(TypeError, match=r"linear: b is float32 but x is float64"):
        F.linear_forward(x, w, backend.asarray(np.zeros(4, np.float32)))
    with pytest.raises(TypeError, match=r"linear: x must be a float array, got int64"):
        F.linear_forward(backend.asarray(np.zeros((2, 3), np.int64)), w)


# ---------------------------------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------------------------------
@st.composite
def embedding_case(draw):
    vocab, c = draw(dims(1, 6)), draw(dims(1, 4))
    ids_shape = draw(shapes(min_dims=1, max_dims=2, max_side=5))
    ids = draw(st.lists(st.integers(0, vocab - 1), min_size=int(np.prod(ids_shape)),
                        max_size=int(np.prod(ids_shape))))
    return np.array(ids, dtype=np.int64).reshape(ids_shape), vocab, c, draw(seeds())


@given(embedding_case())
def test_embedding_forward_and_gradients(xp_backend, case):
    ids, vocab, c, seed = case
    table = normal_array(seed, (vocab, c))
    y, _ = F.embedding_forward(backend.asarray(ids), backend.asarray(table))
    np.testing.assert_array_equal(backend.to_numpy(y), table[ids])
    # float64 central differences, normwise relative error <= GRAD_RTOL (1e-6)
    report = check_gradients(F.embedding_forward, F.embedding_backward,
                             dict(ids=backend.asarray(ids), table=backend.asarray(table)), wrt=("table",),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=embedding_case())
def test_embedding_backward_accumulates_repeated_ids(xp_backend, dtype, case):
    ids, vocab, c, seed = case
    ids = np.concatenate([ids.reshape(-1), ids.reshape(-1)[:1].repeat(3)])  # at least one id repeated 4 times
    _, cache = F.embedding_forward(backend.asarray(ids), backend.asarray(normal_array(seed, (vocab, c), dtype)))
    dy = normal_array(seed + 1, ids.shape + (c,), dtype)
    dtable = F.embedding_backward(backend.asarray(dy), cache)
    assert dtable.dtype == np.dtype(dtype) and dtable.shape == (vocab, c)
    expected = np.zeros((vocab, c))
    for i, v in enumerate(ids):  # the plainest loop: every position adds its row
        expected[v] += dy[i]
    np.testing.assert_allclose(backend.to_numpy(dtable), expected, *TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_dtype_preserved(xp_backend, dtype):
    y, cache = F.embedding_forward(backend.asarray(np.array([[0, 2, 2]], dtype=np.int32)),
                                   backend.asarray(normal_array(0, (3, 4), dtype)))
    assert y.dtype == np.dtype(dtype) and y.shape == (1, 3, 4)
    assert F.embedding_backward(backend.asarray(normal_array(1, (1, 3, 4), dtype)), cache).dtype == np.dtype(dtype)


def test_embedding_bad_inputs(xp_backend):
    table = backend.asarray(np.zeros((5, 2)))
    with pytest.raises(TypeError, match=r"embedding: ids must be an integer array, got float64"):
        F.embedding_forward(backend.asarray(np.array([0.0, 1.0])), table)
    # ids are range-checked where they come from the host (free there), on any backend's table; ids already on a
    # device are not (a sync per call), by contract
    with pytest.raises(ValueError, match=r"embedding: id 7 is out of range for a table of V=5"):
        F.embedding_forward(np.array([0, 7, 1]), table)
    with pytest.raises(ValueError, match=r"embedding: id -1 is out of range for a table of V=5"):
        F.embedding_forward(np.array([[0], [-1]]), table)
    with pytest.raises(ValueError, match=r"embedding: id 5 is out of range"):  # V itself is one past the end
        F.embedding_forward(np.array([5]), table)
    with pytest.raises(ValueError, match=r"embedding: table must be 2-D"):
        F.embedding_forward(backend.asarray(np.array([0])), backend.asarray(np.zeros(5)))
    with pytest.raises(TypeError, match=r"embedding: table must be a float array"):
        F.embedding_forward(backend.asarray(np.array([0])), backend.asarray(np.zeros((5, 2), np.int64)))
