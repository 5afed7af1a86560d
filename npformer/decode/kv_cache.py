"""The key/value cache: what each attention layer has already computed, kept so a new token costs one position.

Shapes: B batch, Hkv key/value heads, T time, D head size; max_len the most positions the cache can hold.

While decoding, a self-attention layer's keys and values at earlier positions never change (the model is
causal), so they are computed once and appended here; each new token then projects only its own q, k, v and
attends over the cached keys. ``MultiHeadAttention.forward(x, kv_cache=cache, positions=...)`` calls
``cache.update(k, v)`` with this call's keys and values, after RoPE, and attends over what it returns.

The cache stores the Hkv key/value heads, not the H query heads, so grouped-query (Hkv < H) and multi-query
(Hkv = 1) attention make it H / Hkv times smaller.
"""

from __future__ import annotations

import numpy as np

from .. import backend


class KVCache:
    """Preallocated (B, Hkv, max_len, D) key and value buffers, filled in place from position 0.

    ``update(k, v)`` writes k, v (B, Hkv, T_new, D) at positions ``length .. length + T_new - 1`` and returns views
    (B, Hkv, length + T_new, D) of the filled part: no copy of the prefix, no reallocation.
    """

    def __init__(self, batch_size: int, n_kv_head: int, max_len: int, head_dim: int, dtype=None, xp=None):
        for name, value in (("batch_size", batch_size), ("n_kv_head", n_kv_head), ("max_len", max_len),
                            ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive integer, got {value!r}")
        dtype = np.dtype(dtype or backend.float_dtype())
        if dtype.kind != "f":
            raise TypeError(f"KVCache: dtype must be a float dtype, got {dtype}")
        xp = xp or backend.xp()
        shape = (int(batch_size), int(n_kv_head), int(max_len), int(head_dim))
        self.k = xp.zeros(shape, dtype=dtype)  # (B, Hkv, max_len, D)
        self.v = xp.zeros(shape, dtype=dtype)
        self.length = 0  # positions filled so far

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes held by the two buffers (allocated up front, whatever ``length`` is)."""
        return int(self.k.nbytes + self.v.nbytes)

    def reset(self) -> None:
        """Forget every position (the buffers are kept and overwritten by later updates)."""
        self.length = 0

    def update(self, k, v):
        """Append k, v (B, Hkv, T_new, D) -> (k_all, v_all), views (B, Hkv, length, D) of everything cached."""
        B, Hkv, max_len, D = self.k.shape
        for name, a in (("k", k), ("v", v)):
            shape = tuple(a.shape)
            if len(shape) != 4 or shape[0] != B or shape[1] != Hkv or shape[3] != D:
                raise ValueError(f"KVCache: {name} must be (B, Hkv, T_new, D) = ({B}, {Hkv}, T_new, {D}), "
                                 f"got {shape}")
            if a.dtype != self.k.dtype:
                raise TypeError(f"KVCache: {name} has dtype {a.dtype}, the cache holds {self.k.dtype}")
        if k.shape[2] != v.shape[2]:
            raise ValueError(f"KVCache: k has {k.shape[2]} new positions but v has {v.shape[2]}")
        start, end = self.length, self.length + k.shape[2]
        if end > max_len:
            raise ValueError(f"KVCache: {k.shape[2]} new positions after {start} cached ones exceed "
                             f"max_len={max_len}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def __repr__(self) -> str:
        B, Hkv, max_len, D = self.k.shape
        return (f"KVCache(B={B}, Hkv={Hkv}, max_len={max_len}, D={D}, dtype={self.k.dtype}, "
                f"length={self.length})")


def make_kv_caches(model, batch_size: int, max_len: int) -> list[KVCache]:
    """One KVCache per block of a GPT, in the model's dtype and on its backend (where its weights live)."""
    cfg = model.config
    weight = model.wte.weight.data
    xp = backend.array_module(weight)
    return [KVCache(batch_size, cfg.n_kv_head, max_len, cfg.head_dim, dtype=weight.dtype, xp=xp)
            for _ in range(cfg.n_layer)]


def kv_cache_nbytes(caches) -> int:
    """Total bytes of a list of caches."""
    return sum(c.nbytes for c in caches)
