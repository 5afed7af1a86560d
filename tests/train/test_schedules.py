"""Learning-rate schedules at their boundary steps, against values computed by hand."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer.train.schedules import (
    Schedule,
    constant,
    inverse_sqrt,
    linear_warmup_linear_decay,
    schedule_from_dict,
    warmup_cosine,
)


def nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's train.py get_lr, restated."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_constant():
    s = constant(3e-4)
    assert [s(0), s(1), s(10**9)] == [3e-4] * 3
    assert repr(s) == "constant(lr=0.0003)"


def test_warmup_cosine_boundaries():
    s = warmup_cosine(max_lr=1.0, warmup_steps=10, decay_steps=110, min_lr=0.1)
    assert s(0) == pytest.approx(1.0 / 11)  # (0 + 1) / (10 + 1)
    assert s(9) == pytest.approx(10.0 / 11)  # warmup - 1
    assert s(10) == pytest.approx(1.0)  # warmup: cosine starts at the top
    assert s(60) == pytest.approx(0.1 + 0.5 * 0.9)  # halfway: cos(pi/2) = 0
    assert s(110) == pytest.approx(0.1)  # decay_steps: cos(pi) = -1
    assert s(111) == 0.1 and s(10**6) == 0.1  # beyond
    assert repr(s) == "warmup_cosine(max_lr=1.0, warmup_steps=10, decay_steps=110, min_lr=0.1)"


@given(max_lr=st.floats(1e-5, 1.0), warmup=st.integers(0, 50), span=st.integers(1, 200),
       min_frac=st.floats(0.0, 1.0), step=st.integers(0, 400))
def test_warmup_cosine_equals_nanogpt(max_lr, warmup, span, min_frac, step):
    min_lr = max_lr * min_frac
    s = warmup_cosine(max_lr, warmup, warmup + span, min_lr)
    assert s(step) == pytest.approx(nanogpt_get_lr(step, max_lr, warmup, warmup + span, min_lr), rel=1e-12)
    assert min(min_lr, max_lr / (warmup + 1)) - 1e-15 <= s(step) <= max_lr + 1e-15


def test_linear_warmup_linear_decay_boundaries():
    s = linear_warmup_linear_decay(max_lr=2.0, warmup_steps=4, decay_steps=14, min_lr=0.0)
    assert s(0) == pytest.approx(2.0 / 5)
    assert s(3) == pytest.approx(2.0 * 4 / 5)
    assert s(4) == pytest.approx(2.0)
    assert s(9) == pytest.approx(1.0)
    assert s(14) == pytest.approx(0.0)
    assert s(15) == 0.0
    assert repr(s).startswith("linear_warmup_linear_decay(max_lr=2.0")


def test_inverse_sqrt_boundaries():
    d, w = 512, 4000
    s = inverse_sqrt(d, w)
    # step counted from 1 inside: s(step) uses step + 1
    assert s(0) == pytest.approx(d**-0.5 * 1 * w**-1.5)
    assert s(w - 2) == pytest.approx(d**-0.5 * (w - 1) * w**-1.5)
    assert s(w - 1) == pytest.approx(d**-0.5 * w**-0.5)  # the peak: both branches agree
    assert s(w) == pytest.approx(d**-0.5 * (w + 1) ** -0.5)
    assert s(4 * w - 1) == pytest.approx(d**-0.5 * (4 * w) ** -0.5)
    assert max(s(i) for i in range(0, 2 * w, 7)) <= s(w - 1)
    assert inverse_sqrt(d, w, scale=2.0)(5) == pytest.approx(2 * s(5))
    assert repr(s) == "inverse_sqrt(d_model=512, warmup_steps=4000, scale=1.0)"


@pytest.mark.parametrize("make, match", [
    (lambda: constant(-1.0), "constant: lr"),
    (lambda: constant(float("nan")), "constant: lr"),
    (lambda: warmup_cosine(1.0, 10, 10, 0.1), "decay_steps"),
    (lambda: warmup_cosine(1.0, 10, 5, 0.1), "decay_steps"),
    (lambda: warmup_cosine(0.1, 10, 50, 1.0), "min_lr"),
    (lambda: warmup_cosine(1.0, -1, 50, 0.0), "warmup_steps"),
    (lambda: warmup_cosine(1.0, 2.5, 50, 0.0), "warmup_steps must be an integer"),
    (lambda: linear_warmup_linear_decay(1.0, 3, 2), "decay_steps"),
    (lambda: inverse_sqrt(0, 10), "d_model"),
    (lambda: inverse_sqrt(64, 0), "warmup_steps"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_step():
    s = warmup_cosine(1.0, 2, 10, 0.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        s(-1)
    with pytest.raises(ValueError, match="step must be an integer"):
        s(1.5)


@pytest.mark.parametrize("s", [constant(0.1), warmup_cosine(1.0, 3, 30, 0.1), linear_warmup_linear_decay(1.0, 0, 9),
                               inverse_sqrt(64, 100, 0.5)])
def test_to_dict_round_trip(s):
    import json

    again = schedule_from_dict(json.loads(json.dumps(s.to_dict())))
    assert isinstance(again, Schedule) and again == s and repr(again) == repr(s)
    assert [again(i) for i in range(40)] == [s(i) for i in range(40)]


def test_from_dict_unknown_kind():
    with pytest.raises(ValueError, match="known kinds"):
        schedule_from_dict({"kind": "cyclic"})
