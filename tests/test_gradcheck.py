"""The gradient checker passes correct backward passes and fails planted wrong ones."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import GradcheckError, check_gradients, check_layer
from npformer.nn import Module, Parameter

from .helpers import randomize_parameters
from .strategies import GRAD_ATOL, GRAD_RTOL, normal_array, seeds


# A small pair with every kind of term: y = tanh(x @ w) * s + x @ w  (the last term exists so a "missing term"
# bug has something to miss).
def toy_forward(x, w, s):
    h = x @ w
    t = np.tanh(h)
    return t * s + h, (x, w, s, t)


def toy_backward(dy, cache):
    x, w, s, t = cache
    dh = dy * s * (1 - t * t) + dy
    return dh @ w.T, x.T @ dh, (dy * t).sum(axis=0)


def bad_factor(dy, cache):
    dx, dw, ds = toy_backward(dy, cache)
    return dx, dw * 1.01, ds


def bad_transpose(dy, cache):  # dw computed with the wrong transposition (square w so the shapes still fit)
    x, w, s, t = cache
    dx, dw, ds = toy_backward(dy, cache)
    return dx, dw.T, ds


def bad_missing_term(dy, cache):  # forgets the residual "+ h" branch
    x, w, s, t = cache
    dh = dy * s * (1 - t * t)
    return dh @ w.T, x.T @ dh, (dy * t).sum(axis=0)


def _inputs(seed, n, c):
    return dict(x=normal_array(seed, (n, c)), w=normal_array(seed + 1, (c, c)), s=normal_array(seed + 2, (c,)))


@given(seeds(), st.integers(1, 4), st.integers(2, 4))
def test_passes_correct_backward(seed, n, c):
    report = check_gradients(toy_forward, toy_backward, _inputs(seed, n, c), wrt=("x", "w", "s"))
    assert report.passed, str(report)
    assert report.max_rel_err < GRAD_RTOL


@pytest.mark.parametrize("bad, culprit", [(bad_factor, "w"), (bad_transpose, "w"), (bad_missing_term, "x")])
@given(seed=seeds())
def test_fails_planted_bugs(bad, culprit, seed):
    report = check_gradients(toy_forward, bad, _inputs(seed, 3, 3), wrt=("x", "w", "s"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert not report.passed
    assert culprit in [t.name for t in report.tensors if not t.passed]
    with pytest.raises(GradcheckError, match=culprit):
        report.assert_ok()


def test_report_table_lists_every_tensor():
    report = check_gradients(toy_forward, bad_factor, _inputs(0, 2, 2), wrt=("x", "w", "s"))
    lines = str(report).splitlines()
    assert lines[0].split()[:2] == ["tensor", "shape"] and "max rel err" in lines[0]
    rows = [line.split() for line in lines[1:-1]]
    assert [(r[0], r[-1]) for r in rows] == [("x", "ok"), ("w", "FAIL"), ("s", "ok")]  # one row per tensor
    assert lines[-1].startswith("FAILED")
    passed = check_gradients(toy_forward, toy_backward, _inputs(0, 2, 2), wrt=("x", "w", "s"))
    assert str(passed).splitlines()[-1].startswith("PASSED")


def test_inputs_are_not_modified():
    inputs = _inputs(7, 2, 3)
    before = {k: v.copy() for k, v in inputs.items()}
    check_gradients(toy_forward, toy_backward, inputs, wrt=("x", "w", "s"))
    for k in inputs:
        np.testing.assert_array_equal(inputs[k], before[k])


def test_float32_inputs_are_checked_in_float64():
    inputs = {k: v.astype(np.float32) for k, v in _inputs(3, 2, 3).items()}
    seen = []

    def fwd(x, w, s):
        seen.append(x.dtype)
        return toy_forward(x, w, s)

    check_gradients(fwd, toy_backward, inputs, wrt=("x", "w", "s")).assert_ok()
    assert set(seen) == {np.dtype(np.float64)}


class Scale(Module):
    """y = x * a + b, with a planted bug switch for the layer checker."""

    def __init__(self, c, bug=False):
        self.a = Parameter(backend.asarray(np.linspace(0.5, 1.5, c)))
        self.b = Parameter(backend.asarray(np.zeros(c)))
        self.bug = bug

    def forward(self, x):
        self.x = x
        return x * self.a.data + self.b.data

    def backward(self, dy):
        self.a.grad += (dy * self.x).sum(axis=0) * (2.0 if self.bug else 1.0)
        self.b.grad += dy.sum(axis=0)
        return dy * self.a.data


def test_check_layer_passes_and_fails():
    with backend.float64():
        x = normal_array(0, (3, 4))
        assert check_layer(randomize_parameters(Scale(4), 1), x).passed
        report = check_layer(randomize_parameters(Scale(4, bug=True), 1), x)
        assert [t.name for t in report.tensors if not t.passed] == ["a"]


def test_wrt_name_must_exist():
    with pytest.raises(ValueError, match="wrt names 'z'"):
        check_gradients(toy_forward, toy_backward, _inputs(0, 2, 2), wrt=("z",))
