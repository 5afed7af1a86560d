"""The mixture-of-experts layer (npformer.nn.MoEFeedForward): every gradient of its objective (the output and its
auxiliary losses) against finite differences, and against a PyTorch mixture of experts written in this file.

Top-k routing is piecewise constant, so each drawn case keeps the gate logits x @ W_gate of every token at least
GAP apart (``assume``): a finite-difference nudge (eps = 1e-6, parameters of size ~1) moves a logit by ~1e-6 and
never swaps two experts, nor the order of a token's choices (which decides capacity's priority).
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.nn import MoEFeedForward

from ..helpers import randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, dims, seeds

GAP = 1e-3


@st.composite
def moe_cases(draw):
    E = draw(st.integers(1, 4))
    return dict(B=draw(dims(1, 2)), T=draw(dims(1, 4)), C=draw(dims(1, 4)), hidden=draw(dims(1, 3)),
                n_experts=E, top_k=draw(st.integers(1, E)), kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])),
                router=draw(st.sampled_from(["mixtral", "switch"])),
                capacity_factor=draw(st.sampled_from([None, 0.5, 1.0])),
                aux_loss_coef=draw(st.sampled_from([0.0, 0.3])), z_loss_coef=draw(st.sampled_from([0.0, 0.2])),
                bias=draw(st.booleans()), seed=draw(seeds()))


def build(case):
    options = {k: case[k] for k in ("n_experts", "top_k", "kind", "router", "capacity_factor", "aux_loss_coef",
                                     "z_loss_coef", "bias")}
    layer = MoEFeedForward(case["C"], case["hidden"], rng=case["seed"], **options)
    randomize_parameters(layer, case["seed"])
    x = np.random.default_rng(case["seed"]).normal(size=(case["B"], case["T"], case["C"]))
    return layer, x


def min_gap(layer, x):
    logits = backend.to_numpy(backend.asarray(x).reshape(-1, x.shape[-1]) @ layer.gate.weight.data)
    if logits.shape[1] < 2:
        return np.inf
    return float(np.diff(np.sort(logits, axis=1), axis=1).min())


@given(case=moe_cases())
def test_moe_layer_gradients(xp_backend, case):
    with backend.float64():
        layer, x_host = build(case)
        assume(min_gap(layer, x_host) > GAP)  # away from routing ties (see the module docstring)
        x = backend.asarray(x_host)
        dy = backend.asarray(np.random.default_rng(1).normal(size=x_host.shape))
        captured = {}

        def loss_fn():  # the layer's objective: what dy says of its output, plus its auxiliary losses
            y = layer.forward(x)
            return (y * dy).sum() + layer.extra_loss

        def backward_fn():
            captured["dx"] = layer.backward(dy)

        report = check_model(loss_fn, backward_fn, layer.named_parameters(), inputs={"x": x},
                             input_grads=lambda: {"x": captured["dx"]}, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, str(report)


def test_capacity_drops_in_training_only(xp_backend):
    case = dict(B=2, T=8, C=4, hidden=3, n_experts=4, top_k=2, kind="gelu", router="mixtral", capacity_factor=0.5,
                aux_loss_coef=0.01, z_loss_coef=0.0, bias=True, seed=3)
    layer, x_host = build(case)
    x = backend.asarray(x_host.astype(np.float32))
    y_train = backend.to_numpy(layer.forward(x))
    stats = backend.to_numpy(layer.stats)
    assert stats.shape == (4 + 2,)
    np.testing.assert_allclose(stats[:4].sum(), 1.0, rtol=1e-6)
    # capacity ceil(0.5 * 16 * 2 / 4) = 4 of 32 assignments per expert: at least half are dropped
    assert stats[-1] >= 0.5
    layer.eval()
    y_eval = backend.to_numpy(layer.forward(x))
    assert backend.to_numpy(layer.stats)[-1] == 0.0
    assert not np.allclose(y_train, y_eval)
    # eval is the same layer with nothing dropped: capacity_factor None computes it in training too
    layer.train()
    layer.capacity_factor = None
    np.testing.assert_allclose(backend.to_numpy(layer.forward(x)), y_eval, rtol=1e-6, atol=1e-7)


def test_parameters_and_bad_options():
    layer = MoEFeedForward(6, 5, n_experts=3, top_k=2, kind="swiglu", bias=True)
    shapes = {name: p.shape for name, p in layer.named_parameters()}
    assert shapes == {"gate.weight": (6, 3), "w_fc": (3, 6, 10), "w_proj": (3, 5, 6), "b_fc": (3, 10),
                      "b_proj": (3, 6)}
    assert layer.b_fc.no_decay and layer.b_proj.no_decay and not layer.w_fc.no_decay
    with pytest.raises(ValueError, match="top_k must be an int in \\[1, n_experts=3\\]"):
        MoEFeedForward(6, 5, n_experts=3, top_k=4)
    with pytest.raises(ValueError, match="router must be one of"):
        MoEFeedForward(6, 5, router="hash")
    with pytest.raises(ValueError, match="capacity_factor must be > 0"):
        MoEFeedForward(6, 5, capacity_factor=0.0)


# ---------------------------------------------------------------------------------------------------------------
# PyTorch as an oracle: a mixture of experts written here with torch's autograd
# ---------------------------------------------------------------------------------------------------------------
def torch_moe(torch, x, gate, w_fc, w_proj, b_fc, b_proj, top_k, kind, router, capacity, aux_coef, z_coef):
    """x: (N, C) -> (y, logits, aux, z), with autograd. Capacity as GShard: first choices before second ones."""
    tF = torch.nn.functional
    N, E = x.shape[0], gate.shape[1]
    logits = x @ gate
    probs = torch.softmax(logits, dim=-1)
    top_logits, experts = torch.topk(logits, top_k, dim=-1)
    weights = torch.softmax(top_logits, dim=-1) if router == "mixtral" else torch.gather(probs, 1, experts)
    used = [0] * E
    kept = torch.zeros(N, top_k, dtype=torch.bool)
    for j in range(top_k):
        for n in range(N):
            e = int(experts[n, j])
            if capacity is None or used[e] < capacity:
                kept[n, j] = True
                used[e] += 1
    rows = []
    for n in range(N):
        out = torch.zeros_like(x[n])
        for j in range(top_k):
            if not kept[n, j]:
                continue
            e = int(experts[n, j])
            h = x[n] @ w_fc[e] + (b_fc[e] if b_fc is not None else 0)
            if kind == "swiglu":
                g, u = h.chunk(2)
                a = tF.silu(g) * u
            else:
                a = tF.relu(h) if kind == "relu" else tF.gelu(h, approximate="tanh")
            out = out + weights[n, j] * (a @ w_proj[e] + (b_proj[e] if b_proj is not None else 0))
        rows.append(out)
    y = torch.stack(rows)
    f = torch.bincount(experts.reshape(-1), minlength=E).to(x.dtype) / experts.numel()
    aux = E * (f * probs.mean(0)).sum()
    z = (torch.logsumexp(logits, dim=-1) ** 2).mean()
    return y, logits, aux, z


@given(case=moe_cases())
def test_moe_layer_equals_pytorch(xp_backend, case):
    torch = pytest.importorskip("torch")
    with backend.float64():
        layer, x_host = build(case)
        assume(min_gap(layer, x_host) > GAP)  # torch.topk and npformer must choose the same experts
        N = case["B"] * case["T"]
        x = backend.asarray(x_host)
        dy_host = np.random.default_rng(2).normal(size=x_host.shape)
        y = layer.forward(x)
        loss = (y * backend.asarray(dy_host)).sum() + layer.extra_loss
        layer.zero_grad()
        dx = layer.backward(backend.asarray(dy_host))
    params = {name: torch.tensor(backend.to_numpy(p.data), requires_grad=True)
              for name, p in layer.named_parameters()}
    tx = torch.tensor(x_host.reshape(N, -1), requires_grad=True)
    capacity = None
    if case["capacity_factor"] is not None:
        capacity = max(1, int(np.ceil(case["capacity_factor"] * N * case["top_k"] / case["n_experts"])))
    ty, tlogits, taux, tz = torch_moe(torch, tx, params["gate.weight"], params["w_fc"], params["w_proj"],
                                      params.get("b_fc"), params.get("b_proj"), case["top_k"], case["kind"],
                                      case["router"], capacity, case["aux_loss_coef"], case["z_loss_coef"])
    tloss = (ty * torch.tensor(dy_host.reshape(N, -1))).sum() + case["aux_loss_coef"] * taux \
        + case["z_loss_coef"] * tz
    tloss.backward()
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(y).reshape(N, -1), ty.detach().numpy(), **tol)
    logits = backend.to_numpy(x).reshape(N, -1) @ backend.to_numpy(layer.gate.weight.data)
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), **tol)
    np.testing.assert_allclose(backend.to_float(layer.aux_loss), taux.item(), **tol)
    np.testing.assert_allclose(backend.to_float(loss), tloss.item(), **tol)
    np.testing.assert_allclose(backend.to_numpy(dx).reshape(N, -1), tx.grad.numpy(), **tol)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(backend.to_numpy(p.grad), params[name].grad.numpy(), err_msg=name, **tol)
