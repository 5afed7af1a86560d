"""The position-wise feed-forward network.  x: (B, T, C) -> y: (B, T, C).

kind "relu" / "gelu":  y = act(x @ w_fc + b_fc) @ w_proj + b_proj           (hidden width F)
kind "swiglu":         y = (silu(x @ w_gate) * (x @ w_up)) @ w_proj        (gate and up in one (C, 2F) matrix)
"""

from __future__ import annotations

from .. import backend
from ..kernels import ops
from .linear import Linear
from .module import Module

FFN_KINDS = ("relu", "gelu", "swiglu")


class FeedForward(Module):
    caches = ("_cache_act",)  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, dim: int, hidden: int, kind: str = "gelu", bias: bool = True, proj_std: float = 0.02,
                 rng=None, gelu_approximate: str = "tanh"):
        if kind not in FFN_KINDS:
            raise ValueError(f"feed-forward kind must be one of {FFN_KINDS}, got {kind!r}")
        self.kind = kind
        self.hidden = hidden
        self.gelu_approximate = gelu_approximate
        # swiglu's gate and up projections are one matrix so the forward is one matrix product
        self.fc = Linear(dim, 2 * hidden if kind == "swiglu" else hidden, bias=bias, rng=rng)
        self.proj = Linear(hidden, dim, bias=bias, std=proj_std, rng=rng)
        self._cache_act = None

    def forward(self, x):
        h = self.fc.forward(x)  # (B, T, F) or (B, T, 2F)
        if self.kind == "relu":
            a, self._cache_act = ops.relu_forward(h)
        elif self.kind == "gelu":
            a, self._cache_act = ops.gelu_forward(h, approximate=self.gelu_approximate)
        else:
            a, self._cache_act = ops.swiglu_forward(h[..., : self.hidden], h[..., self.hidden:])
        return self.proj.forward(a)

    def backward(self, dy):
        da = self.proj.backward(dy)
        if self.kind == "relu":
            dh = ops.relu_backward(da, self._cache_act)
        elif self.kind == "gelu":
            dh = ops.gelu_backward(da, self._cache_act)
        else:
            dgate, dup = ops.swiglu_backward(da, self._cache_act)
            xp = backend.array_module(dgate)
            dh = xp.concatenate([dgate, dup], axis=-1)
        self._cache_act = None
        return self.fc.backward(dh)
