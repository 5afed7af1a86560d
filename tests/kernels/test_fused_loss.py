"""lm_head_cross_entropy: the fast tier's chunked LM head + cross-entropy equals the reference (linear then
cross_entropy: loss and both gradients) for any chunk size, with ignored targets; the reference's gradients match
finite differences; dtypes; both tiers refuse bad inputs alike."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients
from npformer.kernels import fused_loss as fast

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, dims, normal_array, seeds, shapes

IGNORE = -100


@st.composite
def head_case(draw):
    """x (..., C), w (C, V), targets (...) with some ignored, chunk (from 1 to more than N), dloss."""
    lead = draw(shapes(min_dims=1, max_dims=2, max_side=5))
    C, V = draw(dims(1, 6)), draw(dims(1, 9))
    n = int(np.prod(lead))
    targets = np.array(draw(st.lists(st.integers(0, V - 1), min_size=n, max_size=n)), dtype=np.int64)
    dropped = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    targets[dropped] = IGNORE
    seed = draw(seeds())
    x = normal_array(seed, lead + (C,), scale=draw(st.sampled_from([0.1, 1.0, 5.0])))
    w = normal_array(seed + 1, (C, V))
    chunk = draw(st.integers(1, n + 2))
    dloss = draw(st.sampled_from([1.0, 0.5, -2.0]))
    return x, w, targets.reshape(lead), chunk, dloss


def plain(x, w, targets, dloss):
    logits, lin_cache = F.linear_forward(x, w)
    loss, ce_cache = F.cross_entropy_forward(logits, targets, ignore_index=IGNORE)
    dx, dw, _ = F.linear_backward(F.cross_entropy_backward(dloss, ce_cache), lin_cache)
    return loss, dx, dw


@given(head_case())
def test_equals_linear_then_cross_entropy(xp_backend, case):
    x, w, targets, chunk, dloss = (backend.asarray(a) if isinstance(a, np.ndarray) else a for a in case)
    loss, cache = fast.lm_head_cross_entropy_forward(x, w, targets, ignore_index=IGNORE, chunk=chunk)
    dx, dw = fast.lm_head_cross_entropy_backward(dloss, cache)
    ref_loss, ref_dx, ref_dw = plain(x, w, targets, dloss)
    rtol, atol = TOL[np.dtype(np.float64)]
    assert loss.shape == () and loss.dtype == np.float64
    np.testing.assert_allclose(backend.to_numpy(loss), backend.to_numpy(ref_loss), rtol=rtol, atol=atol)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(backend.to_numpy(dx), backend.to_numpy(ref_dx), rtol=rtol, atol=atol)
    np.testing.assert_allclose(backend.to_numpy(dw), backend.to_numpy(ref_dw), rtol=rtol, atol=atol)


@given(head_case())
def test_gradients_match_finite_differences(case):
    x, w, targets, chunk, _ = case
    if (targets == IGNORE).all():
        targets = targets.copy()
        targets.reshape(-1)[0] = 0  # keep one position, so the gradients are not trivially zero
    report = check_gradients(
        lambda x, w, targets: F.lm_head_cross_entropy_forward(x, w, targets, ignore_index=IGNORE, chunk=chunk),
        F.lm_head_cross_entropy_backward, dict(x=x, w=w, targets=targets), wrt=("x", "w"),
        rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_float32_close_to_plain(xp_backend, dtype):
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((3, 7, 16)).astype(dtype))
    w = backend.asarray((rng.standard_normal((16, 65)) * 0.3).astype(dtype))
    t = backend.asarray(rng.integers(0, 65, size=(3, 7)))
    loss, cache = fast.lm_head_cross_entropy_forward(x, w, t, chunk=5)
    dx, dw = fast.lm_head_cross_entropy_backward(np.float64(1.0), cache)  # a float64 dloss must not upcast
    assert loss.dtype == dx.dtype == dw.dtype == dtype
    ref_loss, ref_dx, ref_dw = plain(x, w, t, 1.0)
    rtol, atol = TOL[np.dtype(dtype)]
    for got, ref in ((loss, ref_loss), (dx, ref_dx), (dw, ref_dw)):
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(ref), rtol=rtol, atol=atol)


def test_all_ignored_gives_zero_loss_and_gradients():
    x, w = np.ones((2, 3)), np.ones((3, 4))
    loss, cache = fast.lm_head_cross_entropy_forward(x, w, np.full((2,), IGNORE), chunk=1)
    dx, dw = fast.lm_head_cross_entropy_backward(1.0, cache)
    assert float(loss) == 0.0 and not dx.any() and not dw.any()


def test_huge_logits_stay_finite():
    x = np.array([[1e4, -1e4]], dtype=np.float32)
    w = np.eye(2, dtype=np.float32)
    loss, cache = fast.lm_head_cross_entropy_forward(x, w, np.array([1]), chunk=1)
    dx, dw = fast.lm_head_cross_entropy_backward(1.0, cache)
    assert np.isfinite(float(loss)) and np.isfinite(dx).all() and np.isfinite(dw).all()
    assert float(loss) == pytest.approx(2e4, rel=1e-6)


@pytest.mark.parametrize("x, w, t, chunk, err, msg", [
    (np.ones((2, 3)), np.ones((4, 5)), np.zeros(2, int), 4, ValueError, "channels"),
    (np.ones((2, 3)), np.ones((3, 5)), np.zeros(3, int), 4, ValueError, "targets have shape"),
    (np.ones((2, 3)), np.ones((3, 5)), np.array([0, 5]), 4, ValueError, "out of range"),
    (np.ones((2, 3)), np.ones((3, 5)), np.zeros(2, int), 0, ValueError, "chunk"),
    (np.ones((2, 3)), np.ones((3, 5)), np.zeros(2), 4, TypeError, "targets must be an integer"),
    (np.ones((2, 3)), np.ones((3, 5), np.float32), np.zeros(2, int), 4, TypeError, "w is float32"),
    (np.ones((2, 3), int), np.ones((3, 5)), np.zeros(2, int), 4, TypeError, "x must be a float"),
])
@pytest.mark.parametrize("tier", [F, fast], ids=["reference", "fast"])
def test_bad_inputs(tier, x, w, t, chunk, err, msg):
    with pytest.raises(err, match="^lm_head_cross_entropy: .*" + msg):
        tier.lm_head_cross_entropy_forward(x, w, t, chunk=chunk)
