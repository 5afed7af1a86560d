"""The mixture-of-experts feed-forward layer: a router and E expert feed-forward networks, k of them per token.

x: (B, T, C) -> y: (B, T, C), a drop-in for FeedForward inside a TransformerBlock (the block's residual sum
carries a token whose assignments were all dropped past its capacity: its output here is 0).

    logits = x @ W_gate                                  (N, E), N = B T, no bias (as Mixtral's gate)
    weights, experts = route(logits, top_k, router)      "mixtral" or "switch" (npformer.functional.moe)
    kept = capacity_keep(...)                            in training, when capacity_factor is set
    y = sum over kept assignments of weight * expert(x)

The layer's auxiliary losses, computed at every forward:
    aux_loss = E * sum_i f_i P_i     (load balancing, 1.0 when balanced)
    z_loss   = mean_n logsumexp(logits_n)^2
    extra_loss = aux_loss_coef * aux_loss + z_loss_coef * z_loss
The model adds ``extra_loss`` to its loss; ``backward(dy)`` then adds the extra loss's gradient, scaled by
``extra_loss_grad`` (the gradient of the model's objective with respect to ``extra_loss``: 1.0 by default; the
model sets it, e.g. to its ``dloss``, or to 0 when its loss left the extra loss out).

Capacity applies in training only: in eval mode (``model.eval()``) no token is dropped, so a decode with the KV
cache, one token at a time, computes what the full forward computes.
"""

from __future__ import annotations

from .. import backend
from ..functional.moe import EXPERT_KINDS, ROUTERS
from ..kernels import ops
from . import init
from .linear import Linear
from .module import Module, Parameter


class MoEFeedForward(Module):
    """E expert feed-forward networks of hidden width F (``kind`` "relu", "gelu" or "swiglu"), k per token.

    Parameters: gate.weight (C, E); w_fc (E, C, F') with F' = 2F for SwiGLU ([gate | up]), w_proj (E, F, C),
    and with ``bias`` b_fc (E, F'), b_proj (E, C).
    """

    caches = ("_cache",)  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, dim: int, hidden: int, n_experts: int = 4, top_k: int = 2, kind: str = "gelu",
                 router: str = "mixtral", capacity_factor: float | None = None, aux_loss_coef: float = 0.01,
                 z_loss_coef: float = 0.0, bias: bool = True, proj_std: float = 0.02, rng=None,
                 gelu_approximate: str = "tanh"):
        if kind not in EXPERT_KINDS:
            raise ValueError(f"moe: expert kind must be one of {EXPERT_KINDS}, got {kind!r}")
        if router not in ROUTERS:
            raise ValueError(f"moe: router must be one of {ROUTERS}, got {router!r}")
        if not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"moe: n_experts must be a positive int, got {n_experts!r}")
        if not isinstance(top_k, int) or not 1 <= top_k <= n_experts:
            raise ValueError(f"moe: top_k must be an int in [1, n_experts={n_experts}], got {top_k!r}")
        if capacity_factor is not None and not capacity_factor > 0:
            raise ValueError(f"moe: capacity_factor must be > 0 or None (no capacity), got {capacity_factor!r}")
        rng = init.as_rng(rng)
        self.n_experts, self.top_k, self.kind, self.router = n_experts, top_k, kind, router
        self.hidden, self.gelu_approximate = hidden, gelu_approximate
        self.capacity_factor, self.aux_loss_coef, self.z_loss_coef = capacity_factor, aux_loss_coef, z_loss_coef
        width = 2 * hidden if kind == "swiglu" else hidden
        self.gate = Linear(dim, n_experts, bias=False, rng=rng)
        self.w_fc = Parameter(init.normal(rng, (n_experts, dim, width), 0.02))
        self.w_proj = Parameter(init.normal(rng, (n_experts, hidden, dim), proj_std))
        self.b_fc = Parameter(init.zeros((n_experts, width)), no_decay=True) if bias else None
        self.b_proj = Parameter(init.zeros((n_experts, dim)), no_decay=True) if bias else None
        self.extra_loss_grad = 1.0
        self._cache = None
        # the last forward's auxiliary losses and statistics (0-d / (E,) arrays where the model lives); read by
        # the model's loss and its progress note. Small, and recomputation must not drop them: not caches.
        self.extra_loss = self.aux_loss = self.z_loss = None
        self.stats = None  # (E + 2,): each expert's share of the assignments, aux_loss, the share dropped

    def forward(self, x):
        shape = x.shape
        C = shape[-1]
        xf = x.reshape(-1, C)  # (N, C)
        logits = self.gate.forward(xf)  # (N, E)
        weights, experts, route_cache = ops.moe_route_forward(logits, self.top_k, self.router)
        capacity = ops.expert_capacity(xf.shape[0], self.top_k, self.n_experts, self.capacity_factor) \
            if self.training else None
        kept = ops.capacity_keep(experts, self.n_experts, capacity) if capacity is not None else None
        aux, aux_cache = ops.load_balancing_loss_forward(logits, experts)
        z, z_cache = ops.router_z_loss_forward(logits) if self.z_loss_coef else (None, None)
        y, experts_cache = ops.moe_experts_forward(
            xf, experts, weights, self.w_fc.data, self.w_proj.data, None if self.b_fc is None else self.b_fc.data,
            None if self.b_proj is None else self.b_proj.data, kept=kept, kind=self.kind,
            gelu_approximate=self.gelu_approximate)
        self.aux_loss, self.z_loss = aux, z
        self.extra_loss = self.aux_loss_coef * aux + (self.z_loss_coef * z if z is not None else 0.0)
        xp = backend.array_module(x)
        dropped = xp.zeros((1,), dtype=x.dtype) if kept is None else \
            xp.reshape(1.0 - kept.mean(dtype=x.dtype), (1,))
        self.stats = xp.concatenate([aux_cache.fraction, xp.reshape(aux, (1,)), dropped])
        self._cache = (shape, route_cache, aux_cache, z_cache, experts_cache)
        return y.reshape(shape)

    def backward(self, dy):
        shape, route_cache, aux_cache, z_cache, experts_cache = self._cache
        self._cache = None
        C = shape[-1]
        dxf, dweights, dw_fc, db_fc, dw_proj, db_proj = ops.moe_experts_backward(dy.reshape(-1, C), experts_cache)
        self.w_fc.grad += dw_fc
        self.w_proj.grad += dw_proj
        if self.b_fc is not None:
            self.b_fc.grad += db_fc
            self.b_proj.grad += db_proj
        # the router's logits reach the loss three ways: through the weights, the aux loss, the z-loss
        dlogits = ops.moe_route_backward(dweights, route_cache)
        g = self.extra_loss_grad
        if g and self.aux_loss_coef:
            dlogits = dlogits + ops.load_balancing_loss_backward(g * self.aux_loss_coef, aux_cache)
        if g and z_cache is not None:
            dlogits = dlogits + ops.router_z_loss_backward(g * self.z_loss_coef, z_cache)
        # logits = x @ W_gate: x reaches y through the experts and through the gate
        dxf = dxf + self.gate.backward(dlogits)
        return dxf.reshape(shape)
