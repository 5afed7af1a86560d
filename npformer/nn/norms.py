"""LayerNorm and RMSNorm layers over the last axis.  x: (..., C) -> y: (..., C)."""

from __future__ import annotations

from .. import backend
from ..kernels import ops
from . import init
from .module import Module, Parameter


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * w + b (b absent when bias=False)."""

    caches = ("_cache",)

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        self.weight = Parameter(init.ones((dim,)))
        self.bias = Parameter(init.zeros((dim,))) if bias else None
        self.eps = eps
        self._cache = None
        self._zero_bias = None  # stands in for b when bias=False; follows the weight's dtype (Module.astype)

    def forward(self, x):
        b = self.bias.data if self.bias is not None else self._zeros_like_weight()
        y, self._cache = ops.layernorm_forward(x, self.weight.data, b, self.eps)
        return y

    def _zeros_like_weight(self):
        w = self.weight.data
        if self._zero_bias is None or self._zero_bias.dtype != w.dtype:
            self._zero_bias = backend.array_module(w).zeros_like(w)
        return self._zero_bias

    def backward(self, dy):
        dx, dw, db = ops.layernorm_backward(dy, self._cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        self._cache = None
        return dx


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * w."""

    caches = ("_cache",)

    def __init__(self, dim: int, eps: float = 1e-6):
        self.weight = Parameter(init.ones((dim,)))
        self.eps = eps
        self._cache = None

    def forward(self, x):
        y, self._cache = ops.rmsnorm_forward(x, self.weight.data, self.eps)
        return y

    def backward(self, dy):
        dx, dw = ops.rmsnorm_backward(dy, self._cache)
        self.weight.grad += dw
        self._cache = None
        return dx


def make_norm(kind: str, dim: int, bias: bool = True, eps: float | None = None) -> Module:
    """"layernorm" or "rmsnorm"."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=1e-5 if eps is None else eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=1e-6 if eps is None else eps)
    raise ValueError(f"norm kind must be 'layernorm' or 'rmsnorm', got {kind!r}")
