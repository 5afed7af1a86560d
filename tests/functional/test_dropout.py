"""Dropout: p = 0 is the identity, the mask keeps the mean and is what backward uses, seeded masks, dtypes and
bad inputs."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F

from ..strategies import normal_array, seeds, shapes

DTYPES = [np.float32, np.float64]


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(xp_backend, dtype):
    x = backend.asarray(normal_array(0, (2, 3, 4), dtype))
    dy = backend.asarray(normal_array(1, (2, 3, 4), dtype))
    y, cache = F.dropout_forward(x, 0.3, backend.rng(0))
    outs = [y, F.dropout_backward(dy, cache), cache.mask]
    assert [o.dtype for o in outs] == [np.dtype(dtype)] * 3 and all(o.shape == (2, 3, 4) for o in outs)


def test_bad_inputs(xp_backend):
    x = backend.asarray(np.zeros((2, 3)))
    for p in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\)"):
            F.dropout_forward(x, p, backend.rng(0))
    with pytest.raises(TypeError, match=r"dropout: rng must be a backend.Generator when p > 0, got NoneType"):
        F.dropout_forward(x, 0.5, None)
