"""Mixture of experts, the reference pairs: routing (both routers), capacity, the load-balancing loss, the router
z-loss and the experts gathered per expert, against finite differences and against plain loops written here.

Top-k is piecewise constant: where two logits tie, a nudge of eps swaps the chosen experts and y jumps. Every
gradient check below draws gate logits with a margin (each row's logits at least MARGIN apart), so the nudges of
a finite difference (eps = 1e-6) never change which experts win, and the check sees one smooth piece.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, dims, seeds

ROUTERS = ("mixtral", "switch")
KINDS = ("relu", "gelu", "swiglu")
MARGIN = 0.25  # the smallest gap between two logits of one row: far from a tie at eps = 1e-6


def margin_logits(seed, N, E, spread=0.5):
    """(N, E) logits whose values in each row are at least MARGIN apart: a random permutation of E levels spaced
    MARGIN + spread apart, each moved by at most spread / 2, then a random shift per row."""
    rng = np.random.default_rng(seed)
    levels = np.arange(E) * (MARGIN + spread)
    rows = np.stack([rng.permutation(levels) for _ in range(N)])
    return rows + rng.uniform(-spread / 2, spread / 2, size=(N, E)) + rng.normal(size=(N, 1))


@st.composite
def routing_cases(draw):
    E = draw(st.integers(1, 5))
    return dict(N=draw(dims(1, 7)), E=E, k=draw(st.integers(1, E)), router=draw(st.sampled_from(ROUTERS)),
                seed=draw(seeds()))


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------------------------------
@given(case=routing_cases())
def test_route_matches_its_definition(xp_backend, case):
    N, E, k = case["N"], case["E"], case["k"]
    logits = margin_logits(case["seed"], N, E)
    weights, experts, _ = F.moe_route_forward(backend.asarray(logits), k, case["router"])
    weights, experts = backend.to_numpy(weights), backend.to_numpy(experts)
    assert experts.dtype == np.int64 and experts.shape == (N, k)
    expected = np.argsort(-logits, axis=1)[:, :k]  # no ties: the order is unique
    np.testing.assert_array_equal(experts, expected)
    probs = softmax(logits)
    chosen = np.take_along_axis(probs, expected, axis=1)
    if case["router"] == "mixtral":  # softmax over the chosen k == softmax over all, top-k, renormalised
        np.testing.assert_allclose(weights, chosen / chosen.sum(axis=1, keepdims=True), *TOL[np.dtype(np.float64)])
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    else:
        np.testing.assert_allclose(weights, chosen, *TOL[np.dtype(np.float64)])


@given(case=routing_cases())
def test_route_gradients(xp_backend, case):
    logits = backend.asarray(margin_logits(case["seed"], case["N"], case["E"]))

    def forward(logits):
        weights, _, cache = F.moe_route_forward(logits, case["k"], case["router"])
        return weights, cache

    # logits drawn MARGIN apart (see the module docstring): float64 differences, rtol GRAD_RTOL or atol GRAD_ATOL
    report = check_gradients(forward, F.moe_route_backward, dict(logits=logits), wrt=("logits",),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


def test_route_refuses_bad_arguments(xp_backend):
    logits = backend.asarray(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="top_k must be an int in \\[1, E=4\\]"):
        F.moe_route_forward(logits, 5)
    with pytest.raises(ValueError, match="router must be one of"):
        F.moe_route_forward(logits, 2, router="expert-choice")
    with pytest.raises(ValueError, match="logits must be \\(N, E\\)"):
        F.moe_route_forward(backend.asarray(np.zeros((2, 3, 4))), 2)


# ---------------------------------------------------------------------------------------------------------------
# capacity
# ---------------------------------------------------------------------------------------------------------------
@given(case=routing_cases(), factor=st.sampled_from([0.25, 0.5, 1.0, 1.5]))
def test_capacity_keeps_the_first_assignments_in_priority_order(xp_backend, case, factor):
    N, E, k = case["N"], case["E"], case["k"]
    experts = np.argsort(-margin_logits(case["seed"], N, E), axis=1)[:, :k]
    capacity = F.expert_capacity(N, k, E, factor)
    assert capacity == max(1, math.ceil(factor * N * k / E))
    kept = backend.to_numpy(F.capacity_keep(backend.asarray(experts), E, capacity))
    # the rule as a loop: first choices of every token before second choices, tokens in order
    expected = np.zeros((N, k), dtype=bool)
    used = [0] * E
    for j in range(k):
        for n in range(N):
            if used[experts[n, j]] < capacity:
                expected[n, j] = True
                used[experts[n, j]] += 1
    np.testing.assert_array_equal(kept, expected)
    assert F.expert_capacity(N, k, E, None) is None
    assert backend.to_numpy(F.capacity_keep(backend.asarray(experts), E, None)).all()


# ---------------------------------------------------------------------------------------------------------------
# load-balancing loss and z-loss
# ---------------------------------------------------------------------------------------------------------------
@given(case=routing_cases())
def test_load_balancing_loss_value_and_gradients(xp_backend, case):
    N, E, k = case["N"], case["E"], case["k"]
    logits = margin_logits(case["seed"], N, E)
    experts = np.argsort(-logits, axis=1)[:, :k]
    aux, _ = F.load_balancing_loss_forward(backend.asarray(logits), backend.asarray(experts))
    f = np.bincount(experts.reshape(-1), minlength=E) / (N * k)
    P = softmax(logits).mean(axis=0)
    assert aux.shape == ()
    np.testing.assert_allclose(backend.to_float(aux), E * (f * P).sum(), rtol=1e-12)
    # uniform probabilities (equal logits) give exactly 1, whatever the assignments
    flat, _ = F.load_balancing_loss_forward(backend.asarray(np.zeros((N, E))), backend.asarray(experts))
    np.testing.assert_allclose(backend.to_float(flat), 1.0, rtol=1e-12)

    # f is counted (constant between ties); P carries the gradient. Logits MARGIN apart, float64 differences.
    report = check_gradients(F.load_balancing_loss_forward, F.load_balancing_loss_backward,
                             dict(logits=backend.asarray(logits), experts=backend.asarray(experts)),
                             wrt=("logits",), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


@given(N=dims(1, 6), E=dims(1, 5), seed=seeds(), scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_router_z_loss_value_and_gradients(xp_backend, N, E, seed, scale):
    logits = np.random.default_rng(seed).normal(size=(N, E)) * scale  # smooth everywhere: no margin needed
    z, _ = F.router_z_loss_forward(backend.asarray(logits))
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    np.testing.assert_allclose(backend.to_float(z), (lse ** 2).mean(), rtol=1e-12)
    report = check_gradients(F.router_z_loss_forward, F.router_z_loss_backward, dict(logits=backend.asarray(logits)),
                             wrt=("logits",), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


# ---------------------------------------------------------------------------------------------------------------
# the experts
# ---------------------------------------------------------------------------------------------------------------
@st.composite
def expert_cases(draw):
    case = draw(routing_cases())
    N, E, k = case["N"], case["E"], case["k"]
    kind = draw(st.sampled_from(KINDS))
    C, Fh = draw(dims(1, 4)), draw(dims(1, 4))
    width = 2 * Fh if kind == "swiglu" else Fh
    rng = np.random.default_rng(case["seed"])
    logits = margin_logits(case["seed"], N, E)
    weights, experts, _ = F.moe_route_forward(logits, k, case["router"])
    factor = draw(st.sampled_from([None, 0.3, 0.6, 1.0]))
    kept = F.capacity_keep(experts, E, F.expert_capacity(N, k, E, factor))
    bias = draw(st.booleans())
    return dict(x=rng.normal(size=(N, C)), experts=experts, weights=weights, kept=kept,
                w_fc=rng.normal(size=(E, C, width)), w_proj=rng.normal(size=(E, Fh, C)),
                b_fc=rng.normal(size=(E, width)) if bias else None, b_proj=rng.normal(size=(E, C)) if bias else None,
                kind=kind)


def experts_by_loop(x, experts, weights, kept, w_fc, w_proj, b_fc, b_proj, kind):
    """y_n = sum_j kept_nj w_nj FFN_e(x_n), one token and one choice at a time."""
    N, k = experts.shape
    y = np.zeros_like(x)
    for n in range(N):
        for j in range(k):
            if not kept[n, j]:
                continue
            e = experts[n, j]
            h = x[n] @ w_fc[e] + (0 if b_fc is None else b_fc[e])
            if kind == "relu":
                a = np.maximum(h, 0)
            elif kind == "gelu":
                a = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
            else:
                g, u = np.split(h, 2)
                a = g / (1 + np.exp(-g)) * u
            y[n] += weights[n, j] * (a @ w_proj[e] + (0 if b_proj is None else b_proj[e]))
    return y


def _on(case):
    return {name: backend.asarray(v) if isinstance(v, np.ndarray) else v for name, v in case.items()}


@given(case=expert_cases())
def test_experts_equal_a_loop_over_tokens(xp_backend, case):
    y, _ = F.moe_experts_forward(**_on(case))
    np.testing.assert_allclose(backend.to_numpy(y), experts_by_loop(**case), *TOL[np.dtype(np.float64)])
    # a token whose every assignment was dropped gets 0: the block's residual carries it alone
    all_dropped = ~case["kept"].any(axis=1)
    assert np.all(backend.to_numpy(y)[all_dropped] == 0.0)


@given(case=expert_cases())
def test_experts_gradients(xp_backend, case):
    inputs = _on(case)
    wrt = ("x", "weights", "w_fc", "b_fc", "w_proj", "b_proj")
    if case["b_fc"] is None:
        inputs.pop("b_fc"), inputs.pop("b_proj")
        wrt = ("x", "weights", "w_fc", None, "w_proj", None)

    def backward(dy, cache):
        grads = F.moe_experts_backward(dy, cache)
        return tuple(g for g, name in zip(grads, wrt) if name is not None)

    # discrete inputs (experts, kept) are fixed; everything float is checked in float64
    report = check_gradients(F.moe_experts_forward, backward, inputs, wrt=tuple(n for n in wrt if n),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)
    # dropped assignments get no weight gradient
    dweights = backend.to_numpy(F.moe_experts_backward(backend.asarray(np.ones(case["x"].shape)),
                                                       F.moe_experts_forward(**inputs)[1])[1])
    assert np.all(dweights[~case["kept"]] == 0.0)


def test_experts_refuse_bad_shapes(xp_backend):
    x = backend.asarray(np.zeros((3, 2)))
    experts = backend.asarray(np.zeros((3, 1), dtype=np.int64))
    weights = backend.asarray(np.ones((3, 1)))
    w_fc, w_proj = backend.asarray(np.zeros((2, 2, 4))), backend.asarray(np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="w_proj must be \\(E, F, C\\) = \\(2, 2, 2\\)"):
        F.moe_experts_forward(x, experts, weights, w_fc, w_proj, kind="swiglu")
    with pytest.raises(ValueError, match="weights must be \\(N=3, k\\)"):
        F.moe_experts_forward(x, experts, backend.asarray(np.ones((2, 1))), w_fc, w_proj)
    with pytest.raises(ValueError, match="kind must be one of"):
        F.moe_experts_forward(x, experts, weights, w_fc, w_proj, kind="tanh")
    with pytest.raises(TypeError, match="experts must be integer"):
        F.moe_experts_forward(x, weights, weights, w_fc, w_proj)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_experts_keep_the_dtype(xp_backend, dtype):
    rng = np.random.default_rng(0)
    logits = backend.asarray(margin_logits(0, 5, 3).astype(dtype))
    weights, experts, rc = F.moe_route_forward(logits, 2)
    x = backend.asarray(rng.normal(size=(5, 4)).astype(dtype))
    w_fc, w_proj = (backend.asarray(rng.normal(size=s).astype(dtype)) for s in ((3, 4, 6), (3, 6, 4)))
    y, cache = F.moe_experts_forward(x, experts, weights, w_fc, w_proj)
    grads = F.moe_experts_backward(y, cache)
    aux, ac = F.load_balancing_loss_forward(logits, experts)
    z, zc = F.router_z_loss_forward(logits)
    dlogits = F.moe_route_backward(grads[1], rc) + F.load_balancing_loss_backward(1.0, ac) + \
        F.router_z_loss_backward(1.0, zc)
    for a in (y, aux, z, dlogits) + tuple(g for g in grads if g is not None):
        assert a.dtype == dtype


@pytest.mark.parametrize("upstream", [np.float64(1.0), np.asarray(1.0), 1.0], ids=["float64", "0-d", "python"])
def test_loss_backwards_keep_float32_for_a_float64_upstream(xp_backend, upstream):
    """GPT.backward(np.float64(1.0)) hands a float64 scalar to both auxiliary losses: their gradients must stay in
    the logits' float32 (else every block below an MoE layer runs its backward in float64)."""
    logits = backend.asarray(margin_logits(1, 6, 4).astype(np.float32))
    _, experts, _ = F.moe_route_forward(logits, 2)
    _, ac = F.load_balancing_loss_forward(logits, experts)
    _, zc = F.router_z_loss_forward(logits)
    d_aux = F.load_balancing_loss_backward(upstream, ac)
    d_z = F.router_z_loss_backward(upstream, zc)
    assert d_aux.dtype == np.float32 and d_z.dtype == np.float32
    # the same values as a float32 upstream gives
    np.testing.assert_array_equal(backend.to_numpy(d_aux),
                                  backend.to_numpy(F.load_balancing_loss_backward(np.float32(1.0), ac)))
    np.testing.assert_array_equal(backend.to_numpy(d_z),
                                  backend.to_numpy(F.router_z_loss_backward(np.float32(1.0), zc)))


def _tiny_experts(E=3, N=4, C=2, Fh=3):
    rng = np.random.default_rng(0)
    return (backend.asarray(rng.normal(size=(N, C))), backend.asarray(rng.normal(size=(E, C, Fh))),
            backend.asarray(rng.normal(size=(E, Fh, C))))


@pytest.mark.parametrize("ids, found", [
    ([[0, 0], [1, 2], [2, 1], [0, 1]], "0 id\\(s\\) outside \\[0, 3\\) and 1 repeat\\(s\\) within a row"),
    ([[0, 1], [1, 3], [2, 1], [-1, 1]], "2 id\\(s\\) outside \\[0, 3\\) and 0 repeat\\(s\\) within a row"),
    ([[2, 2], [1, 1], [2, 1], [0, 5]], "1 id\\(s\\) outside \\[0, 3\\) and 2 repeat\\(s\\) within a row"),
])
def test_experts_refuse_repeated_or_out_of_range_ids(xp_backend, ids, found):
    """A repeated id in a row would make y[rows] += ... add one expert's output once, not twice; an id outside
    [0, E) would be dropped. Both are refused, whether or not capacity kept the assignment."""
    x, w_fc, w_proj = _tiny_experts()
    experts = backend.asarray(np.asarray(ids, dtype=np.int64))
    weights = backend.asarray(np.full((4, 2), 0.5))
    for kept in (None, backend.asarray(np.ones((4, 2), dtype=bool)), backend.asarray(np.zeros((4, 2), dtype=bool))):
        with pytest.raises(ValueError, match="moe experts: experts must be distinct ids in \\[0, E\\) within each row"
                                             ", got " + found):
            F.moe_experts_forward(x, experts, weights, w_fc, w_proj, kept=kept, kind="relu")
    # distinct ids in range pass
    good = backend.asarray(np.asarray([[0, 1], [1, 2], [2, 0], [0, 2]], dtype=np.int64))
    F.moe_experts_forward(x, good, weights, w_fc, w_proj, kind="relu")


def test_host_routing_for_device_activations(xp_backend):
    """Host (NumPy) experts, weights and kept for device logits / activations are moved to the device, as a host
    mask is for attention: the same results as device inputs."""
    x, w_fc, w_proj = _tiny_experts()
    logits = backend.asarray(margin_logits(3, 4, 3))
    weights, experts, _ = F.moe_route_forward(logits, 2)
    kept = F.capacity_keep(experts, 3, 2)
    aux, _ = F.load_balancing_loss_forward(logits, backend.to_numpy(experts))
    expected, _ = F.load_balancing_loss_forward(logits, experts)
    assert backend.to_float(aux) == backend.to_float(expected)
    y, _ = F.moe_experts_forward(x, backend.to_numpy(experts), backend.to_numpy(weights), w_fc, w_proj,
                                 kept=backend.to_numpy(kept), kind="gelu")
    y_device, _ = F.moe_experts_forward(x, experts, weights, w_fc, w_proj, kept=kept, kind="gelu")
    assert backend.array_module(y) is backend.array_module(x)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(y_device))


def test_capacity_factor_zero_is_no_limit_and_negative_is_refused(xp_backend):
    assert F.expert_capacity(10, 2, 4, 0) is None and F.expert_capacity(10, 2, 4, 0.0) is None
    for bad in (-1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="capacity_factor must be >= 0 or None"):
            F.expert_capacity(10, 2, 4, bad)
    # a capacity of 0 (given directly) keeps nothing
    experts = backend.asarray(np.asarray([[0, 1], [1, 2], [2, 0]], dtype=np.int64))
    assert not backend.to_numpy(F.capacity_keep(experts, 3, 0)).any()
