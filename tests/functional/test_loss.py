"""cross_entropy: -log softmax at the target, label smoothing, ignore_index, huge logits, gradients against finite
differences, dtypes, bad inputs, and (optionally) PyTorch as an oracle."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, dims, normal_array, seeds, shapes

DTYPES = [np.float32, np.float64]
IGNORE = -100


@st.composite
def ce_case(draw, ignore=True, min_kept=0):
    """(logits (..., V) float64, targets (...) int64 with some == IGNORE when ignore=True, V)."""
    lead = draw(shapes(min_dims=1, max_dims=2, max_side=4))
    vocab = draw(dims(1, 6))
    n = int(np.prod(lead))
    targets = draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n))
    if ignore:
        dropped = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        keep_first = min(min_kept, n)
        targets = [t if (not d or i < keep_first) else IGNORE for i, (t, d) in enumerate(zip(targets, dropped))]
    logits = normal_array(draw(seeds()), lead + (vocab,), scale=draw(st.sampled_from([0.1, 1.0, 10.0])))
    return logits, np.array(targets, dtype=np.int64).reshape(lead), vocab


def neg_log_softmax_reference(logits):
    """-log softmax along the last axis, row by row with math.fsum (independent of the code under test)."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        m = max(row)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
        out[i] = lse - row
    return out.reshape(logits.shape)


def ce(logits, targets, **kw):
    loss, cache = F.cross_entropy_forward(backend.asarray(logits), backend.asarray(targets), **kw)
    return loss, cache


@given(ce_case(ignore=False))
def test_equals_neg_log_softmax_at_target(xp_backend, case):
    logits, targets, _ = case
    loss, _ = ce(logits, targets)
    assert loss.shape == () and loss.dtype == np.float64
    nls = neg_log_softmax_reference(logits)
    expected = np.take_along_axis(nls, targets[..., None], axis=-1).mean()
    np.testing.assert_allclose(backend.to_numpy(loss), expected, *TOL[np.dtype(np.float64)])


@given(ce_case(ignore=True), st.floats(0.0, 1.0))
def test_label_smoothing_matches_direct_formula(xp_backend, case, eps):
    logits, targets, vocab = case
    loss, _ = ce(logits, targets, label_smoothing=eps)
    # direct: the cross-entropy against the smoothed target distribution q = (1 - eps) onehot + eps / V
    kept = targets != IGNORE
    nls = neg_log_softmax_reference(logits)[kept]  # (K, V)
    q = np.full(nls.shape, eps / vocab)
    q[np.arange(len(q)), targets[kept]] += 1.0 - eps
    expected = (q * nls).sum(axis=-1).mean() if kept.any() else 0.0
    np.testing.assert_allclose(backend.to_numpy(loss), expected, *TOL[np.dtype(np.float64)])


@given(ce_case(ignore=True), st.sampled_from([0.0, 0.1]))
def test_ignore_index_excludes_positions(xp_backend, case, eps):
    logits, targets, vocab = case
    loss, cache = ce(logits, targets, label_smoothing=eps)
    kept = targets != IGNORE
    dlogits = backend.to_numpy(F.cross_entropy_backward(1.0, cache))
    # ignored positions get no gradient, whatever their logits
    np.testing.assert_array_equal(dlogits[~kept], 0.0)
    if kept.any():
        kept_loss, kept_cache = ce(logits[kept], targets[kept], label_smoothing=eps)
        np.testing.assert_allclose(backend.to_numpy(loss), backend.to_numpy(kept_loss), *TOL[np.dtype(np.float64)])
        np.testing.assert_allclose(dlogits[kept], backend.to_numpy(F.cross_entropy_backward(1.0, kept_cache)),
                                   *TOL[np.dtype(np.float64)])
    else:
        assert backend.to_numpy(loss) == 0.0 and np.all(dlogits == 0.0)
    # changing the logits of ignored positions changes nothing
    moved = logits + np.where(kept, 0.0, 5.0)[..., None]
    np.testing.assert_allclose(backend.to_numpy(ce(moved, targets, label_smoothing=eps)[0]), backend.to_numpy(loss),
                               *TOL[np.dtype(np.float64)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_all_ignored_gives_zero_not_nan(xp_backend, dtype, eps):
    logits = normal_array(0, (2, 3, 4), dtype)
    loss, cache = ce(logits, np.full((2, 3), IGNORE), label_smoothing=eps)
    assert loss.dtype == np.dtype(dtype) and backend.to_numpy(loss) == 0.0
    dlogits = backend.to_numpy(F.cross_entropy_backward(1.0, cache))
    assert dlogits.dtype == np.dtype(dtype) and np.all(dlogits == 0.0)


@given(ce_case(ignore=True, min_kept=1), st.sampled_from([0.0, 0.1]), st.sampled_from(DTYPES), seeds())
def test_huge_logits_stay_finite(xp_backend, case, eps, dtype, seed):
    logits, targets, vocab = case
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=logits.shape)
    huge = (signs * 1e4 + logits).astype(dtype)  # magnitude ~1e4: exp overflows without the max subtraction
    loss, cache = ce(huge, targets, label_smoothing=eps)
    dlogits = backend.to_numpy(F.cross_entropy_backward(1.0, cache))
    assert np.isfinite(backend.to_numpy(loss)) and np.all(np.isfinite(dlogits))
    # against the float64 reference: float32 rounds logits of 1e4 to ~1e-3, hence the loose float32 allowance
    kept = targets != IGNORE
    nls = neg_log_softmax_reference(huge.astype(np.float64))
    expected = np.take_along_axis(nls, np.where(kept, targets, 0)[..., None], axis=-1)[..., 0][kept].mean()
    if eps == 0.0:
        atol = 1e-8 if dtype == np.float64 else 1e-2
        np.testing.assert_allclose(backend.to_numpy(loss), expected, rtol=1e-6, atol=atol)


@given(ce_case(ignore=True), st.sampled_from([0.0, 0.1, 0.5]))
def test_gradients(xp_backend, case, eps):
    logits, targets, _ = case
    # float64 central differences, normwise relative error <= GRAD_RTOL (1e-6) or abs <= GRAD_ATOL (1e-8)
    report = check_gradients(lambda logits, targets: F.cross_entropy_forward(logits, targets, label_smoothing=eps),
                             F.cross_entropy_backward,
                             dict(logits=backend.asarray(logits), targets=backend.asarray(targets)), wrt=("logits",),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@given(ce_case(ignore=True), st.floats(-3.0, 3.0))
def test_backward_scales_with_dloss(xp_backend, case, dloss):
    logits, targets, _ = case
    _, cache = ce(logits, targets, label_smoothing=0.1)
    one = backend.to_numpy(F.cross_entropy_backward(1.0, cache))
    scaled = backend.to_numpy(F.cross_entropy_backward(backend.asarray(np.float64(dloss)), cache))
    np.testing.assert_allclose(scaled, dloss * one, *TOL[np.dtype(np.float64)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(xp_backend, dtype):
    logits = normal_array(0, (2, 3, 5), dtype)
    targets = np.array([[0, 4, IGNORE], [1, 1, 2]], dtype=np.int32)
    loss, cache = ce(logits, targets, label_smoothing=0.1)
    assert loss.dtype == np.dtype(dtype) and loss.shape == ()
    for dloss in (1.0, backend.asarray(np.float64(2.0)), backend.asarray(np.float32(2.0))):
        dlogits = F.cross_entropy_backward(dloss, cache)
        assert dlogits.dtype == np.dtype(dtype) and dlogits.shape == (2, 3, 5)


def test_bad_inputs(xp_backend):
    logits = backend.asarray(np.zeros((2, 5)))
    with pytest.raises(TypeError, match=r"cross_entropy: targets must be an integer array, got float64"):
        F.cross_entropy_forward(logits, backend.asarray(np.array([0.0, 1.0])))
    with pytest.raises(TypeError, match=r"cross_entropy: logits must be a float array, got int64"):
        F.cross_entropy_forward(backend.asarray(np.zeros((2, 5), np.int64)), backend.asarray(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"cross_entropy: targets have shape \(3,\) but logits \(2, 5\) need "
                                         r"targets of shape \(2,\)"):
        F.cross_entropy_forward(logits, backend.asarray(np.array([0, 1, 2])))
    # host targets are range-checked (free there) whatever the logits' backend; device ones are not, by contract
    with pytest.raises(ValueError, match=r"cross_entropy: target 7 is out of range for V=5"):
        F.cross_entropy_forward(logits, np.array([0, 7]))
    with pytest.raises(ValueError, match=r"cross_entropy: target -3 is out of range for V=5"):
        F.cross_entropy_forward(logits, np.array([-3, IGNORE]))
    with pytest.raises(ValueError, match=r"cross_entropy: target -100 is out of range"):  # not ignored here
        F.cross_entropy_forward(logits, np.array([IGNORE, 1]), ignore_index=-1)
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"):
        F.cross_entropy_forward(logits, backend.asarray(np.array([0, 1])), label_smoothing=1.5)


# ---------------------------------------------------------------------------------------------------------------
# PyTorch as an oracle (float64), skipped without torch
# ---------------------------------------------------------------------------------------------------------------
@given(ce_case(ignore=True, min_kept=1), st.sampled_from([0.0, 0.1, 0.3]))
def test_matches_torch(xp_backend, case, eps):
    torch = pytest.importorskip("torch")
    logits, targets, vocab = case
    tl = torch.tensor(logits.reshape(-1, vocab), requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(targets.reshape(-1)), ignore_index=IGNORE,
                                              label_smoothing=eps)
    tloss.backward()
    loss, cache = ce(logits, targets, ignore_index=IGNORE, label_smoothing=eps)
    dlogits = F.cross_entropy_backward(1.0, cache)
    tol = TOL[np.dtype(np.float64)]
    np.testing.assert_allclose(backend.to_numpy(loss), tloss.item(), *tol)
    np.testing.assert_allclose(backend.to_numpy(dlogits), tl.grad.numpy().reshape(logits.shape), *tol)
