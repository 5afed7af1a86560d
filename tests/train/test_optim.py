"""Optimizers and gradient clipping: hand-computed steps, torch.optim as an oracle, dtypes, state round trips."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.kernels import KERNEL_TIERS, set_kernels
from npformer.nn import Module, Parameter
from npformer.train.optim import SGD, AdamW, clip_grad_norm, grad_norm, param_groups, scale_grads

from ..strategies import TOL, seeds, shapes

DTYPES = [np.float32, np.float64]


def make_params(seed, shape_list, dtype=np.float64):
    """[(name, Parameter)] on the active backend, each with its own draw from one generator."""
    rng = np.random.default_rng([seed, 0])
    return [(f"p{i}", Parameter(backend.asarray(rng.standard_normal(s).astype(dtype))))
            for i, s in enumerate(shape_list)]


def grads_for(seed, step, shape_list, dtype=np.float64):
    """The gradients of step ``step``: one generator per (seed, step), apart from make_params' (a gradient never
    equals its parameter, which would hide an update that read one for the other)."""
    rng = np.random.default_rng([seed, 1, step])
    return [rng.standard_normal(s).astype(dtype) for s in shape_list]


def set_grads(named, grads):
    for (_, p), g in zip(named, grads):
        p.grad[...] = backend.asarray(g, dtype=p.grad.dtype)


def host(named):
    return [backend.to_numpy(p.data).copy() for _, p in named]


# ---------------------------------------------------------------------------------------------------------------
# hand-computed steps
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", KERNEL_TIERS)
def test_adamw_matches_formula_for_three_steps(xp_backend, tier):
    set_kernels(tier)  # the step is ops.adamw_update: the reference's, or the fast tier's in place
    lr, b1, b2, eps, wd = 0.1, 0.8, 0.9, 1e-3, 0.5
    p0 = np.array([[1.0, -2.0], [0.5, 3.0]])
    named = [("w", Parameter(backend.asarray(p0)))]
    opt = AdamW(named, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t in (1, 2, 3):
        g = np.array([[0.3, -1.0], [2.0, 0.1]]) * t
        set_grads(named, [g])
        opt.step()
        # the formula, written out: decoupled decay, moments, bias correction
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(host(named)[0], p, rtol=1e-12, atol=1e-14)
    assert opt.step_count == 3


def test_sgd_nesterov_matches_formula_for_three_steps(xp_backend):
    lr, mu, wd = 0.1, 0.9, 0.01
    p0 = np.array([1.0, -2.0, 0.5])
    named = [("w", Parameter(backend.asarray(p0)))]
    opt = SGD(named, lr=lr, momentum=mu, weight_decay=wd, nesterov=True)
    p, buf = p0.copy(), None
    for t in (1, 2, 3):
        g = np.array([0.3, -1.0, 2.0]) / t
        set_grads(named, [g])
        opt.step()
        d = g + wd * p
        buf = d if buf is None else mu * buf + d
        p = p - lr * (d + mu * buf)
        np.testing.assert_allclose(host(named)[0], p, rtol=1e-12, atol=1e-14)


def test_plain_sgd_is_p_minus_lr_g(xp_backend):
    named = [("w", Parameter(backend.asarray(np.array([1.0, 2.0]))))]
    opt = SGD(named, lr=0.5)
    set_grads(named, [np.array([2.0, -4.0])])
    opt.step()
    np.testing.assert_allclose(host(named)[0], [0.0, 4.0])
    assert opt.state["w"] == {}  # no momentum, no buffer


# ---------------------------------------------------------------------------------------------------------------
# torch.optim as an oracle
# ---------------------------------------------------------------------------------------------------------------
@given(seed=seeds(), shape_list=st.lists(shapes(), min_size=1, max_size=3),
       lr=st.floats(1e-4, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9]), weight_decay=st.sampled_from([0.0, 0.1]),
       nesterov=st.booleans())
def test_sgd_matches_torch(seed, shape_list, lr, momentum, weight_decay, nesterov):
    torch = pytest.importorskip("torch")
    nesterov = nesterov and momentum > 0
    named = make_params(seed, shape_list)
    tparams = [torch.tensor(a, requires_grad=True) for a in host(named)]
    opt = SGD(named, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    topt = torch.optim.SGD(tparams, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    _step_both(opt, named, topt, tparams, seed, shape_list, torch)
    for ours, t in zip(host(named), tparams):
        np.testing.assert_allclose(ours, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def _step_both(opt, named, topt, tparams, seed, shape_list, torch, steps=4):
    """Four steps of our optimizer and torch's from the same gradients (drawn per step from seed)."""
    for step in range(steps):
        grads = grads_for(seed, step, shape_list)
        set_grads(named, grads)
        for t, g in zip(tparams, grads):
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()


@given(seed=seeds(), lr=st.floats(1e-4, 0.1), b1=st.sampled_from([0.0, 0.9]), b2=st.sampled_from([0.95, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.1, 1.0]),
       lr_scale=st.sampled_from([1.0, 0.5]), tier=st.sampled_from(KERNEL_TIERS))
def test_adamw_with_param_groups_matches_torch(seed, lr, b1, b2, eps, weight_decay, lr_scale, tier):
    torch = pytest.importorskip("torch")
    set_kernels(tier)
    shape_list = [(3, 4), (4,), (2, 1, 3), (1,)]
    named = make_params(seed, shape_list)
    groups = param_groups(named, weight_decay)
    assert [n for n, _ in groups[0]["params"]] == ["p0", "p2"]  # matrices decay, 1-D do not
    assert groups[1]["weight_decay"] == 0.0
    groups[1]["lr"] = lr * lr_scale  # a per-group lr, kept as a scale of the base lr
    opt = AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    tparams = [torch.tensor(a, requires_grad=True) for a in host(named)]
    topt = torch.optim.AdamW([{"params": [tparams[0], tparams[2]], "weight_decay": weight_decay},
                              {"params": [tparams[1], tparams[3]], "weight_decay": 0.0, "lr": lr * lr_scale}],
                             lr=lr, betas=(b1, b2), eps=eps)
    _step_both(opt, named, topt, tparams, seed, shape_list, torch)
    for ours, t in zip(host(named), tparams):
        np.testing.assert_allclose(ours, t.detach().numpy(), rtol=1e-9, atol=1e-12)


@given(seed=seeds(), shape_list=st.lists(shapes(), min_size=1, max_size=3), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       max_norm=st.sampled_from([0.1, 1.0, 10.0]), dtype=st.sampled_from(DTYPES))
def test_clip_grad_norm_matches_torch(seed, shape_list, scale, max_norm, dtype):
    torch = pytest.importorskip("torch")
    named = make_params(seed, shape_list, dtype)
    grads = [g * scale for g in grads_for(seed, 0, shape_list, dtype)]
    set_grads(named, grads)
    tparams = [torch.tensor(a, requires_grad=True) for a in host(named)]
    for t, g in zip(tparams, grads):
        t.grad = torch.tensor(g)
    norm = clip_grad_norm([p for _, p in named], max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    rtol, atol = TOL[np.dtype(dtype)]
    assert norm.shape == () and norm.dtype == dtype  # a 0-d array on the gradients' backend, as torch's tensor
    assert math.isclose(float(norm), float(tnorm), rel_tol=rtol)
    for (_, p), t in zip(named, tparams):
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(backend.to_numpy(p.grad), t.grad.numpy(), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------------------------
# clipping and scaling without torch
# ---------------------------------------------------------------------------------------------------------------
def test_clip_grad_norm_scales_only_above_max(xp_backend):
    named = [("a", Parameter(backend.asarray(np.zeros((2,))))), ("b", Parameter(backend.asarray(np.zeros((1,)))))]
    set_grads(named, [np.array([3.0, 0.0]), np.array([4.0])])  # norm 5
    norm = clip_grad_norm(named, 10.0)
    assert norm.shape == () and backend.array_module(norm) is xp_backend  # a 0-d array where the gradients are
    assert backend.to_float(norm) == pytest.approx(5.0)
    np.testing.assert_array_equal(backend.to_numpy(named[0][1].grad), [3.0, 0.0])
    assert backend.to_float(clip_grad_norm(named, 1.0)) == pytest.approx(5.0)
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(backend.to_numpy(named[0][1].grad), [3.0 * coef, 0.0], rtol=1e-12)
    np.testing.assert_allclose(backend.to_float(grad_norm(named)), 5.0 * coef, rtol=1e-12)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_grad_norm_non_finite(xp_backend, bad):
    """A non-finite norm is returned as it is. On the host the gradients are left untouched (the caller skips the
    step); on a device, deciding would cost a sync, so they are scaled by a non-finite coefficient, and the
    caller's next check of the loss stops the run."""
    named = [("a", Parameter(backend.asarray(np.zeros((3,), np.float32))))]
    set_grads(named, [np.array([1.0, bad, 2.0], np.float32)])
    with np.errstate(invalid="ignore"):
        norm = clip_grad_norm(named, 1.0)
    assert not math.isfinite(backend.to_float(norm))
    grad = backend.to_numpy(named[0][1].grad)
    if xp_backend is np:
        np.testing.assert_array_equal(grad[[0, 2]], [1.0, 2.0])
    else:
        assert not np.isfinite(grad).all()  # the non-finite element stays so (inf * 0, nan * c): caught next


def test_clip_grad_norm_validates_max_norm():
    named = make_params(0, [(2,)])
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="clip_grad_norm: max_norm"):
            clip_grad_norm(named, bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_grads(xp_backend, dtype):
    named = make_params(1, [(2, 3), (3,)], dtype)
    grads = grads_for(1, 0, [(2, 3), (3,)], dtype)
    set_grads(named, grads)
    scale_grads(named, 0.25)
    for (_, p), g in zip(named, grads):
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(backend.to_numpy(p.grad), g * 0.25, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# dtypes, backends, in-place updates
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1),
                                  lambda ps: SGD(ps, lr=1e-2, momentum=0.9, weight_decay=0.1, nesterov=True)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved_and_updates_in_place(xp_backend, make, dtype):
    shape_list = [(4, 3), (3,)]
    named = make_params(2, shape_list, dtype)
    arrays_before = [p.data for _, p in named]
    opt = make(named)
    for step in range(3):
        set_grads(named, grads_for(2, step, shape_list, dtype))
        opt.step()
    for (_, p), before in zip(named, arrays_before):
        assert p.data is before  # updated in place: the model's references stay valid
        assert p.data.dtype == dtype and p.grad.dtype == dtype
        assert bool(xp_backend.isfinite(p.data).all())
    for bufs in opt.state.values():
        for arr in bufs.values():
            assert arr.dtype == dtype
            assert backend.array_module(arr) is xp_backend


def test_float32_close_to_float64(xp_backend):
    shape_list = [(5, 4), (4,)]
    runs = {}
    for dtype in DTYPES:
        named = make_params(3, shape_list, dtype)
        opt = AdamW(named, lr=1e-2)
        for step in range(5):
            set_grads(named, grads_for(3, step, shape_list, dtype))
            opt.step()
        runs[dtype] = host(named)
    for a, b in zip(runs[np.float32], runs[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_zero_grad(xp_backend):
    named = make_params(0, [(2, 2), (2,)])
    set_grads(named, grads_for(0, 0, [(2, 2), (2,)]))
    opt = SGD(named, lr=0.1)
    opt.zero_grad()
    for _, p in named:
        assert not bool((p.grad != 0).any())


# ---------------------------------------------------------------------------------------------------------------
# learning rate and groups
# ---------------------------------------------------------------------------------------------------------------
def test_set_lr_keeps_group_scales():
    named = make_params(0, [(2, 2), (2,)])
    opt = AdamW([{"params": named[:1]}, {"params": named[1:], "lr": 0.5}], lr=2.0)
    assert [g["lr"] for g in opt.param_groups] == [2.0, 0.5]
    opt.set_lr(0.1)
    assert opt.lr == 0.1
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.025])
    opt.lr = 1.0
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.25])
    opt2 = SGD([{"params": named[:1], "lr_scale": 3.0}, {"params": named[1:]}], lr=0.1)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([0.3, 0.1])
    with pytest.raises(ValueError, match="set_lr"):
        opt.set_lr(-1.0)


def test_lr_zero_leaves_parameters_unchanged():
    named = make_params(0, [(2, 2)])
    before = host(named)
    opt = AdamW(named, lr=0.0, weight_decay=0.5)
    set_grads(named, grads_for(0, 0, [(2, 2)]))
    opt.step()
    np.testing.assert_array_equal(host(named)[0], before[0])


class Tiny(Module):
    def __init__(self):
        self.w = Parameter(backend.asarray(np.ones((2, 3))))
        self.b = Parameter(backend.asarray(np.zeros((3,))))
        self.g = Parameter(backend.asarray(np.ones((3,))), no_decay=False)  # an explicit override is respected


def test_param_groups_from_module_and_dict():
    m = Tiny()
    for source in (m, m.named_parameters(), dict(m.named_parameters())):
        groups = param_groups(source, 0.1)
        assert [[n for n, _ in g["params"]] for g in groups] == [["w", "g"], ["b"]]
        assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert len(param_groups([("b", m.b)], 0.1)) == 1  # empty groups are left out
    opt = AdamW(m, lr=1e-3)  # a Module directly
    assert opt.param_groups[0]["names"] == ["w", "b", "g"]
    opt = SGD([m.w, m.b], lr=1e-3)  # bare parameters are named by position
    assert opt.param_groups[0]["names"] == ["0", "1"]


@pytest.mark.parametrize("make, match", [
    (lambda ps: SGD(ps, lr=-0.1), "lr must be"),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), "Nesterov"),
    (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), "momentum must be"),
    (lambda ps: AdamW(ps, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda ps: AdamW(ps, eps=-1.0), "eps must be"),
    (lambda ps: AdamW(ps, weight_decay=float("nan")), "weight_decay must be"),
    (lambda ps: AdamW([], lr=0.1), "empty parameter list"),
    (lambda ps: AdamW([ps[0], ps[0]]), "more than once"),
    (lambda ps: AdamW([{"params": ps, "momentum": 0.9}]), "unknown keys"),
    (lambda ps: AdamW([{"params": ps, "lr": 0.1}], lr=0.0), "lr_scale"),
    (lambda ps: AdamW([{"params": ps, "lr": 0.1, "lr_scale": 2.0}]), "both"),
])
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make(make_params(0, [(2, 2)]))


def test_non_float_parameter_is_refused():
    p = Parameter(np.arange(4, dtype=np.int64))
    with pytest.raises(TypeError, match="not a float dtype"):
        SGD([p], lr=0.1)
    with pytest.raises(TypeError, match="not a Parameter"):
        SGD([np.zeros(3)], lr=0.1)


# ---------------------------------------------------------------------------------------------------------------
# state dicts
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: AdamW(param_groups(ps, 0.1), lr=3e-3, betas=(0.8, 0.99)),
                                  lambda ps: SGD(ps, lr=1e-2, momentum=0.9, nesterov=True)])
@given(seed=seeds())
def test_state_dict_resume_is_exact(make, seed):
    shape_list = [(3, 2), (2,)]
    a = make_params(seed, shape_list)
    opt_a = make(a)
    for step in range(2):
        set_grads(a, grads_for(seed, step, shape_list))
        opt_a.step()
    state = opt_a.state_dict()
    for key, value in state.items():  # host arrays, or plain scalars / lists
        assert isinstance(value, (np.ndarray, str, int, float, list)), key
    # a fresh model with the same weights and a fresh optimizer loaded from the state continue identically
    b = [(n, Parameter(backend.asarray(arr))) for (n, _), arr in zip(a, host(a))]
    opt_b = make(b)
    opt_b.set_lr(123.0)  # overwritten by the state, as in torch
    opt_b.load_state_dict(state)
    assert opt_b.step_count == 2 and opt_b.lr == opt_a.lr
    for step in range(2, 4):
        for named in (a, b):
            set_grads(named, grads_for(seed, step, shape_list))
        opt_a.step()
        opt_b.step()
    for x, y in zip(host(a), host(b)):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_lists_every_problem():
    named = make_params(0, [(3, 2), (2,)])
    opt = AdamW(named, lr=1e-3)
    state = opt.state_dict()
    state["exp_avg/p0"] = np.zeros((2, 3))  # wrong shape
    state["exp_avg_sq/p1"] = state["exp_avg_sq/p1"].astype(np.float32)  # wrong dtype
    del state["exp_avg/p1"]  # missing
    state["exp_avg/p9"] = np.zeros(2)  # unexpected
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(state)
    msg = str(info.value)
    assert msg.startswith("AdamW.load_state_dict")
    for fragment in ("exp_avg/p0: shape (2, 3)", "exp_avg_sq/p1: dtype float32", "missing: exp_avg/p1",
                     "unexpected: exp_avg/p9"):
        assert fragment in msg
    with pytest.raises(ValueError, match="'SGD'"):
        opt.load_state_dict(SGD(named, lr=0.1, momentum=0.9).state_dict())
    other = AdamW(make_params(0, [(3, 2)]), lr=1e-3)
    with pytest.raises(ValueError, match="parameters"):
        opt.load_state_dict(other.state_dict())
    # nothing was changed by the failed loads
    assert opt.step_count == 0 and opt.lr == 1e-3
