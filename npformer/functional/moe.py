"""Mixture of experts: the router, its auxiliary losses and the experts, each a forward/backward pair.

Shapes: N tokens (B T flattened), C channels, E experts, k experts per token (top_k), F an expert's hidden width
(F' = 2 F for SwiGLU experts, whose first matrix is [gate | up]), M the assignments an expert receives.

A mixture-of-experts feed-forward layer, as Switch Transformers and Mixtral compute it:

    logits = x @ W_router                                     (N, E)      moe_route_forward's input
    weights, experts = route(logits)                          (N, k)      moe_route_forward
    kept = capacity_keep(experts, E, capacity)                (N, k)      training only; no gradient
    y_n = sum_j kept_nj * weights_nj * expert_{experts_nj}(x_n)           moe_experts_forward
    aux = E * sum_i f_i P_i                                   0-d         load_balancing_loss_forward
    z = mean_n logsumexp(logits_n)^2                          0-d         router_z_loss_forward

Two routers (``ROUTERS``):
    "mixtral"  the k largest logits, then a softmax over those k alone. Equal to a softmax over all E, top-k, and
               renormalising the k probabilities to sum to 1 (Mixtral's code does it that way).
    "switch"   a softmax over all E, then the k largest probabilities, not renormalised (Switch Transformers,
               with k = 1: the token's output is scaled by its router probability).

Top-k is piecewise constant: a nudge that swaps which experts win changes y by a jump. The backward below is the
gradient inside a piece (away from ties), which is what training follows and what finite differences see there.

Tokens are gathered per expert (each expert runs only on the M rows routed to it; nothing computes every expert
on every token). The per-expert slices need the E + 1 offsets on the host: one small transfer per forward on a
GPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import backend
from .activations import gelu_backward, gelu_forward, relu_backward, relu_forward, swiglu_backward, swiglu_forward
from .softmax import SoftmaxCache, softmax_backward, softmax_forward

ROUTERS = ("mixtral", "switch")
EXPERT_KINDS = ("relu", "gelu", "swiglu")


def _check_logits(op: str, logits) -> None:
    if getattr(logits, "dtype", None) is None or logits.dtype.kind != "f":
        raise TypeError(f"{op}: logits must be a float array, got {getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"{op}: logits must be (N, E) with E >= 1, got shape {tuple(logits.shape)}")


# ---------------------------------------------------------------------------------------------------------------
# routing: logits -> the k experts of each token and their weights
# ---------------------------------------------------------------------------------------------------------------
class RouteCache(NamedTuple):
    router: str
    experts: object  # (N, k) int64: the chosen experts, best first
    softmax: SoftmaxCache  # "mixtral": of the k chosen logits, (N, k); "switch": of all E logits, (N, E)
    n_experts: int


def top_k_experts(logits, top_k: int):
    """(N, E) -> (N, k) int64: the indices of each row's k largest logits, largest first (ties: lowest index)."""
    xp = backend.array_module(logits)
    return xp.argsort(-logits, axis=-1, kind="stable")[:, :top_k].astype(np.int64)


def moe_route_forward(logits, top_k: int, router: str = "mixtral"):
    """The router's choice: each token's k experts and their weights.

    logits: (N, E) float; top_k: 1 <= k <= E; router: "mixtral" or "switch" (see the module docstring)
    -> weights (N, k) of logits' dtype, experts (N, k) int64, cache.
    """
    _check_logits("moe route", logits)
    if router not in ROUTERS:
        raise ValueError(f"moe route: router must be one of {ROUTERS}, got {router!r}")
    E = logits.shape[1]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= E:
        raise ValueError(f"moe route: top_k must be an int in [1, E={E}], got {top_k!r}")
    xp = backend.array_module(logits)
    experts = top_k_experts(logits, top_k)
    if router == "mixtral":
        chosen = xp.take_along_axis(logits, experts, axis=1)  # (N, k)
        weights, softmax_cache = softmax_forward(chosen)
        return weights, experts, RouteCache(router, experts, softmax_cache, E)
    probs, softmax_cache = softmax_forward(logits)  # (N, E)
    weights = xp.take_along_axis(probs, experts, axis=1)
    return weights, experts, RouteCache(router, experts, softmax_cache, E)


def moe_route_backward(dweights, cache: RouteCache):
    """dweights: (N, k) -> dlogits: (N, E).

    (softmax_backward, functional/softmax.py, derives  dz_i = y_i (dy_i - sum_j y_j dy_j)  for y = softmax(z).)

    "mixtral". The forward was  s_j = logits[e_j] (the k chosen),  w = softmax(s):
        ds_j = w_j (dw_j - sum_i w_i dw_i)           (softmax's Jacobian over the k chosen)
        dlogits[e_j] = ds_j,  and 0 at the E - k logits not chosen: they reach neither w nor y
        (top-k's choice itself is constant between ties: it contributes nothing).
        An assignment that capacity dropped (dw_j = 0) still sends gradient to its logit, through the softmax
        over the k chosen: its logit sets the other chosen experts' weights.
    "switch". The forward was  p = softmax(logits),  w_j = p[e_j]:
        dp[e_j] = dw_j, 0 elsewhere;   dlogits = p * (dp - sum_i p_i dp_i)
        so an expert not chosen still gets a gradient, through the softmax's denominator.
    """
    router, experts, softmax_cache, E = cache
    xp = backend.array_module(dweights)
    N = experts.shape[0]
    scattered = xp.zeros((N, E), dtype=dweights.dtype)
    if router == "mixtral":
        xp.put_along_axis(scattered, experts, softmax_backward(dweights, softmax_cache), axis=1)
        return scattered
    xp.put_along_axis(scattered, experts, dweights, axis=1)  # the k experts of a row are distinct
    return softmax_backward(scattered, softmax_cache)


# ---------------------------------------------------------------------------------------------------------------
# capacity: at most `capacity` assignments per expert; the rest are dropped
# ---------------------------------------------------------------------------------------------------------------
def expert_capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float | None) -> int | None:
    """The most assignments one expert takes: ceil(capacity_factor * N k / E) (Switch's "expert capacity", times k
    for top-k routing); None (no limit) when capacity_factor is None or 0. A negative factor is refused."""
    if capacity_factor is None or capacity_factor == 0:
        return None
    if not capacity_factor > 0:  # negative, or NaN
        raise ValueError(f"expert capacity: capacity_factor must be >= 0 or None (no limit), got {capacity_factor!r}")
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def capacity_keep(experts, n_experts: int, capacity: int | None):
    """experts: (N, k) int -> kept: (N, k) bool, True for the assignments their expert has room for.

    Priority (GShard, Switch): every token's first choice before any token's second choice, and within one
    choice, tokens in order. An expert's first ``capacity`` assignments in that order are kept; the rest are
    dropped: they add nothing to y (the token keeps the residual stream, the layer's output for it is 0 if all of
    its k assignments were dropped). No gradient: the choice of which to keep is piecewise constant.
    """
    xp = backend.array_module(experts)
    if capacity is None:
        return xp.ones(experts.shape, dtype=bool)
    N, k = experts.shape
    by_choice = experts.T.reshape(-1)  # (k N,): slot-major, the priority order
    one_hot = (by_choice[:, None] == xp.arange(n_experts, dtype=np.int64)[None, :]).astype(np.int64)  # (k N, E)
    position = xp.take_along_axis(xp.cumsum(one_hot, axis=0), by_choice[:, None], axis=1)[:, 0] - 1  # 0-based
    return (position < capacity).reshape(k, N).T


# ---------------------------------------------------------------------------------------------------------------
# load-balancing loss: E * sum_i f_i P_i
# ---------------------------------------------------------------------------------------------------------------
class LoadBalanceCache(NamedTuple):
    softmax: SoftmaxCache  # of all logits: its probabilities are (N, E)
    fraction: object  # (E,): f, the share of the router's assignments each expert got (sums to 1)


def expert_fractions(experts, n_experts: int, dtype):
    """experts: (N, k) int -> f: (E,) the share of the N k assignments each expert got (sums to 1)."""
    xp = backend.array_module(experts)
    one_hot = experts[..., None] == xp.arange(n_experts, dtype=np.int64)  # (N, k, E)
    return one_hot.reshape(-1, n_experts).sum(axis=0).astype(dtype) / float(experts.size)


def load_balancing_loss_forward(logits, experts):
    """Switch Transformers' auxiliary loss: aux = E * sum_i f_i P_i.

    f_i: the fraction of the router's N k assignments that went to expert i (before any capacity drop; counted, so
    no gradient flows through it); P_i = mean_n softmax(logits_n)_i, the router's mean probability of expert i.
    Both sum to 1, and aux is 1 when both are uniform (1/E each), larger when they are unbalanced together.

    logits: (N, E) float; experts: (N, k) int (moe_route_forward's) -> aux: 0-d array of logits' dtype, cache.
    """
    _check_logits("load balancing loss", logits)
    N, E = logits.shape
    experts = backend.to_backend_of(experts, logits)  # host expert ids for device logits: moved here
    if getattr(experts, "ndim", None) != 2 or experts.shape[0] != N:
        raise ValueError(f"load balancing loss: experts must be (N={N}, k), got {getattr(experts, 'shape', None)}")
    probs, softmax_cache = softmax_forward(logits)
    fraction = expert_fractions(experts, E, logits.dtype)
    xp = backend.array_module(logits)
    aux = xp.asarray(float(E) * (fraction * probs.mean(axis=0)).sum(), dtype=logits.dtype)  # 0-d
    return aux, LoadBalanceCache(softmax_cache, fraction)


def load_balancing_loss_backward(daux, cache: LoadBalanceCache):
    """daux: scalar (or 0-d) -> dlogits: (N, E).

    The forward was  P_i = (1/N) sum_n p_ni,  p_n = softmax(logits_n),  aux = E sum_i f_i P_i, f constant:
        dP_i = daux * E * f_i
        dp_ni = dP_i / N                      (each token's probability enters the mean once)
        dlogits_n = p_n * (dp_n - sum_i p_ni dp_ni)       (softmax, row by row: softmax_backward)
    """
    softmax_cache, fraction = cache
    probs = softmax_cache.y
    N, E = probs.shape
    # the upstream scalar in the logits' dtype (a float64 0-d daux must not upcast float32)
    scale = backend.array_module(probs).asarray(daux, dtype=probs.dtype)
    dp = (scale * float(E) / N) * fraction  # (E,), the same for every row
    return softmax_backward(dp[None, :], softmax_cache)


# ---------------------------------------------------------------------------------------------------------------
# router z-loss: mean_n logsumexp(logits_n)^2
# ---------------------------------------------------------------------------------------------------------------
class ZLossCache(NamedTuple):
    probs: object  # (N, E)
    lse: object  # (N, 1)


def router_z_loss_forward(logits):
    """ST-MoE's router z-loss: z = (1/N) sum_n (log sum_i exp(logits_ni))^2, which keeps the logits small.

    logits: (N, E) float -> z: 0-d array of logits' dtype, cache.
    """
    _check_logits("router z-loss", logits)
    xp = backend.array_module(logits)
    m = logits.max(axis=-1, keepdims=True)
    e = xp.exp(logits - m)
    s = e.sum(axis=-1, keepdims=True)
    lse = m + xp.log(s)  # (N, 1), stable
    return xp.asarray((lse * lse).mean(), dtype=logits.dtype), ZLossCache(e / s, lse)


def router_z_loss_backward(dz, cache: ZLossCache):
    """dz: scalar (or 0-d) -> dlogits: (N, E).

    The forward was  lse_n = log sum_i exp(logits_ni),  z = (1/N) sum_n lse_n^2:
        dlse_n = dz * 2 lse_n / N;   d lse_n / d logits_ni = softmax(logits_n)_i = p_ni
        so dlogits_ni = dz * 2 lse_n p_ni / N
    """
    probs, lse = cache
    # the upstream scalar in the logits' dtype (a float64 0-d dz must not upcast float32)
    scale = backend.array_module(probs).asarray(dz, dtype=probs.dtype)
    return (scale * 2.0 / probs.shape[0]) * lse * probs


# ---------------------------------------------------------------------------------------------------------------
# the experts: tokens gathered per expert, each expert a feed-forward network
# ---------------------------------------------------------------------------------------------------------------
class ExpertPart(NamedTuple):
    """What one expert's forward keeps: its assignments and the activations of its M rows."""
    assignment: object  # (M,) int64: flat index n k + j into the (N, k) weights
    rows: object  # (M,) int64: the token n of each assignment (distinct within one expert)
    act_cache: object  # the activation's cache (relu / gelu / swiglu pair)
    a: object  # (M, F): the activation's output, the second matrix's input
    out: object  # (M, C): the expert's output, before the router's weight


class ExpertsCache(NamedTuple):
    x: object  # (N, C)
    weights: object  # (N, k)
    w_fc: object  # (E, C, F')
    w_proj: object  # (E, F, C)
    has_bias: bool
    kind: str
    parts: tuple  # one ExpertPart per expert (None for an expert that got no assignment)


def _check_experts(x, experts, weights, kept, w_fc, w_proj, b_fc, b_proj, kind) -> None:
    op = "moe experts"
    if kind not in EXPERT_KINDS:
        raise ValueError(f"{op}: kind must be one of {EXPERT_KINDS}, got {kind!r}")
    if getattr(x, "ndim", None) != 2 or x.dtype.kind != "f":
        raise ValueError(f"{op}: x must be a float (N, C) array, got {getattr(x, 'shape', None)}")
    N, C = x.shape
    if getattr(w_fc, "ndim", None) != 3 or w_fc.shape[1] != C:
        raise ValueError(f"{op}: w_fc must be (E, C={C}, F'), got {getattr(w_fc, 'shape', None)}")
    E, F2 = w_fc.shape[0], w_fc.shape[2]
    F = F2 // 2 if kind == "swiglu" else F2
    if kind == "swiglu" and F2 % 2:
        raise ValueError(f"{op}: SwiGLU experts need an even w_fc width [gate | up], got {F2}")
    if tuple(getattr(w_proj, "shape", ())) != (E, F, C):
        raise ValueError(f"{op}: w_proj must be (E, F, C) = ({E}, {F}, {C}), got {getattr(w_proj, 'shape', None)}")
    for name, b, shape in (("b_fc", b_fc, (E, F2)), ("b_proj", b_proj, (E, C))):
        if b is not None and tuple(b.shape) != shape:
            raise ValueError(f"{op}: {name} must be {shape}, got {tuple(b.shape)}")
    if (b_fc is None) != (b_proj is None):
        raise ValueError(f"{op}: give both biases (b_fc, b_proj) or neither")
    for name, a in (("experts", experts), ("weights", weights), ("kept", kept)):
        if a is not None and (getattr(a, "ndim", None) != 2 or a.shape[0] != N or a.shape != experts.shape):
            raise ValueError(f"{op}: {name} must be (N={N}, k) like experts, got {getattr(a, 'shape', None)}")
    if experts.dtype.kind not in "iu":
        raise TypeError(f"{op}: experts must be integer expert ids, got {experts.dtype}")
    for name, a in [("w_fc", w_fc), ("w_proj", w_proj), ("weights", weights), ("b_fc", b_fc), ("b_proj", b_proj)]:
        if a is not None and a.dtype != x.dtype:
            raise TypeError(f"{op}: {name} is {a.dtype} but x is {x.dtype}; they must match")


def _group_by_expert(experts, kept, E: int):
    """The flat assignments (n k + j) sorted by expert, dropped ones last, and each expert's [start, stop) in that
    order (host ints: one small transfer).

    The same transfer brings back two counts that must be 0: ids outside [0, E), and ids repeated within a row
    (the experts' sum adds into y[rows] with +=, exact only when one expert sees each token at most once).
    Either raises ValueError; checking them costs no extra device sync."""
    xp = backend.array_module(experts)
    out_of_range = ((experts < 0) | (experts >= E)).sum()
    by_row = xp.sort(experts, axis=1)
    repeated = (by_row[:, 1:] == by_row[:, :-1]).sum()  # (N, k - 1): equal neighbours once sorted
    key = experts.reshape(-1)
    if kept is not None:
        key = xp.where(kept.reshape(-1), key, E)  # dropped assignments sort after every expert's
    order = xp.argsort(key, kind="stable").astype(np.int64)
    bounds = xp.searchsorted(key[order], xp.arange(E + 1, dtype=key.dtype), side="left")
    counts = backend.to_numpy(xp.concatenate([bounds.astype(np.int64),
                                              xp.stack([out_of_range, repeated]).astype(np.int64)]))
    n_out, n_repeated = int(counts[E + 1]), int(counts[E + 2])
    if n_out or n_repeated:
        raise ValueError(f"moe experts: experts must be distinct ids in [0, E) within each row, got {n_out} id(s) "
                         f"outside [0, {E}) and {n_repeated} repeat(s) within a row")
    return order, [int(b) for b in counts[:E + 1]]


def _activate(h, kind: str, gelu_approximate: str):
    if kind == "relu":
        return relu_forward(h)
    if kind == "gelu":
        return gelu_forward(h, approximate=gelu_approximate)
    F = h.shape[-1] // 2
    return swiglu_forward(h[:, :F], h[:, F:])


def _activate_backward(da, act_cache, kind: str):
    if kind == "relu":
        return relu_backward(da, act_cache)
    if kind == "gelu":
        return gelu_backward(da, act_cache)
    dgate, dup = swiglu_backward(da, act_cache)
    return backend.array_module(dgate).concatenate([dgate, dup], axis=-1)


def moe_experts_forward(x, experts, weights, w_fc, w_proj, b_fc=None, b_proj=None, kept=None, kind: str = "gelu",
                        gelu_approximate: str = "tanh"):
    """The experts' weighted sum:  y_n = sum_j kept_nj * weights_nj * FFN_{experts_nj}(x_n).

    FFN_e(x) = act(x @ w_fc[e] + b_fc[e]) @ w_proj[e] + b_proj[e]   (act: relu, gelu, or SwiGLU on [gate | up]).
    Each expert runs on the rows routed to it alone (gathered, never all N).

    x: (N, C); experts: (N, k) int in [0, E), distinct within a row (a token's k experts are k different ones;
    anything else raises ValueError); weights: (N, k); w_fc: (E, C, F'); w_proj: (E, F, C);
    b_fc: (E, F') and b_proj: (E, C), or both None; kept: (N, k) bool or None (all kept)
    -> y: (N, C), cache. Host experts, weights and kept for device x are moved to x's backend.
    """
    if getattr(x, "ndim", None) is not None:  # host routing for device activations: moved here (x is checked below)
        experts, weights, kept = (None if a is None else backend.to_backend_of(a, x) for a in (experts, weights, kept))
    _check_experts(x, experts, weights, kept, w_fc, w_proj, b_fc, b_proj, kind)
    xp = backend.array_module(x)
    N, k = experts.shape
    E = w_fc.shape[0]
    order, bounds = _group_by_expert(experts, kept, E)
    flat_weights = weights.reshape(-1)
    y = xp.zeros_like(x)
    parts = []
    for e in range(E):
        start, stop = bounds[e], bounds[e + 1]
        if start == stop:
            parts.append(None)
            continue
        assignment = order[start:stop]  # (M,)
        rows = assignment // k
        h = x[rows] @ w_fc[e]  # (M, F')
        if b_fc is not None:
            h = h + b_fc[e]
        a, act_cache = _activate(h, kind, gelu_approximate)  # (M, F)
        out = a @ w_proj[e]  # (M, C)
        if b_proj is not None:
            out = out + b_proj[e]
        # one expert sees each token at most once, so these rows are distinct and += is exact
        y[rows] += flat_weights[assignment][:, None] * out
        parts.append(ExpertPart(assignment, rows, act_cache, a, out))
    return y, ExpertsCache(x, weights, w_fc, w_proj, b_fc is not None, kind, tuple(parts))


def moe_experts_backward(dy, cache: ExpertsCache):
    """dy: (N, C) -> dx (N, C), dweights (N, k), dw_fc (E, C, F'), db_fc (E, F') or None, dw_proj (E, F, C),
    db_proj (E, C) or None.

    Per expert e and each of its assignments (n, j), the forward was (llm.c's style, line by line):
        h = x_n @ w_fc[e] + b_fc[e];   a = act(h);   o = a @ w_proj[e] + b_proj[e];   y_n += w_nj * o
    so, upside down:
        dw_nj = sum_c dy_nc o_c               (the router's weight scales the whole output)
        do = w_nj * dy_n
        dw_proj[e] += a^T do;   db_proj[e] += sum do;   da = do @ w_proj[e]^T
        dh = act'(h) * da                     (SwiGLU: its pair's backward on [gate | up])
        dw_fc[e] += x_n^T dh;   db_fc[e] += sum dh;      dx_n += dh @ w_fc[e]^T
    A dropped assignment (or an expert no token chose) contributes nothing: its dw is 0. dx_n sums over the
    experts of token n.
    """
    x, weights, w_fc, w_proj, has_bias, kind, parts = cache
    xp = backend.array_module(dy)
    N, k = weights.shape
    dx = xp.zeros_like(x)
    dflat = xp.zeros((N * k,), dtype=weights.dtype)
    flat_weights = weights.reshape(-1)
    dw_fc, dw_proj = xp.zeros_like(w_fc), xp.zeros_like(w_proj)
    db_fc = xp.zeros(w_fc.shape[::2], dtype=w_fc.dtype) if has_bias else None  # (E, F')
    db_proj = xp.zeros(w_proj.shape[::2], dtype=w_proj.dtype) if has_bias else None  # (E, C)
    for e, part in enumerate(parts):
        if part is None:
            continue
        assignment, rows, act_cache, a, out = part
        dy_rows = dy[rows]  # (M, C)
        dflat[assignment] = (dy_rows * out).sum(axis=-1)  # y_n += w o: dw = <dy_n, o>
        do = flat_weights[assignment][:, None] * dy_rows  # (M, C)
        dw_proj[e] = a.T @ do
        da = do @ w_proj[e].T  # (M, F)
        dh = _activate_backward(da, act_cache, kind)  # (M, F')
        dw_fc[e] = x[rows].T @ dh
        if has_bias:
            db_proj[e] = do.sum(axis=0)
            db_fc[e] = dh.sum(axis=0)
        dx[rows] += dh @ w_fc[e].T  # distinct rows within one expert
    return dx, dflat.reshape(N, k), dw_fc, db_fc, dw_proj, db_proj
