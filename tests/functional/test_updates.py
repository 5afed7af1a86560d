"""adamw_update, the reference AdamW step: the formula written out element by element, in place, dtypes kept."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F

from ..strategies import TOL, normal_array, seeds, shapes


def adamw_elementwise(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step on Python floats (torch.optim.AdamW's algorithm), for one element."""
    p = p - lr * weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
    return p - lr * m_hat / (math.sqrt(v_hat) + eps), m, v


@given(shape=shapes(max_dims=2, max_side=4), seed=seeds(), lr=st.floats(1e-4, 0.5),
       beta1=st.sampled_from([0.0, 0.8, 0.9]), beta2=st.sampled_from([0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.1, 1.0]))
def test_three_steps_match_the_formula(xp_backend, shape, seed, lr, beta1, beta2, eps, weight_decay):
    p0 = normal_array(seed, shape)
    p, m, v = (backend.asarray(a) for a in (p0, np.zeros(shape), np.zeros(shape)))
    ref = [(float(x), 0.0, 0.0) for x in p0.reshape(-1)]
    for step in (1, 2, 3):
        g = normal_array(seed + step, shape)
        F.adamw_update(p, backend.asarray(g), m, v, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                       weight_decay=weight_decay, step=step)
        ref = [adamw_elementwise(pi, gi, mi, vi, lr, beta1, beta2, eps, weight_decay, step)
               for (pi, mi, vi), gi in zip(ref, g.reshape(-1))]
        for name, got, idx in (("p", p, 0), ("m", m, 1), ("v", v, 2)):
            want = np.array([r[idx] for r in ref]).reshape(shape)
            np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name} after step {step}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_in_place_and_keeps_the_dtype(xp_backend, dtype):
    p, g = (backend.asarray(normal_array(s, (3, 4), dtype)) for s in (0, 1))
    m, v = backend.xp().zeros_like(p), backend.xp().zeros_like(p)
    before = backend.to_numpy(p).copy()
    arrays = (p, m, v)
    assert F.adamw_update(p, g, m, v, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=1) is None
    assert all(a.dtype == np.dtype(dtype) for a in arrays)
    assert not np.array_equal(backend.to_numpy(p), before)  # p itself changed, not a copy
    # step 1 with zero moments: m = (1 - b1) g, v = (1 - b2) g^2, and the Adam step is lr * sign(g) up to eps
    rtol, atol = TOL[np.dtype(dtype)]
    gh = backend.to_numpy(g).astype(np.float64)
    np.testing.assert_allclose(backend.to_numpy(m), 0.1 * gh, rtol=rtol, atol=atol)
    np.testing.assert_allclose(backend.to_numpy(v), 0.01 * gh * gh, rtol=rtol, atol=atol)
