"""The key/value cache: what each attention layer has already computed, kept so a new token costs one position.

Shapes: B batch, Hkv key/value heads, T time, D head size; max_len the most positions the cache can hold.

While decoding, a self-attention layer's keys and values at earlier positions never change (the model is
causal), so they are computed once and appended here; each new token then projects only its own q, k, v and
attends over the cached keys. ``MultiHeadAttention.forward(x, kv_cache=cache, positions=...)`` calls
``cache.update(k, v)`` with this call's keys and values, after RoPE, and attends over what it returns.

The cache stores the Hkv key/value heads, not the H query heads, so grouped-query (Hkv < H) and multi-query
(Hkv = 1) attention make it H / Hkv times smaller.

With sliding-window attention (a model whose config has ``window`` W: each query sees its last W keys), a key
older than W positions is never read again, so ``RollingKVCache`` keeps only the last W: a ring buffer of W slots,
whatever the length of the text, and the same result as the full forward (tests/decode/test_rolling_cache.py).
"""

from __future__ import annotations

import numpy as np

from .. import backend


def _buffers(who: str, sizes: dict, dtype, xp):
    """Zeroed key and value buffers of shape ``sizes`` (batch_size, n_kv_head, positions, head_dim), each size
    checked (a positive integer) and the dtype a float dtype; ``who`` names the cache in errors."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    dtype = np.dtype(dtype or backend.float_dtype())
    if dtype.kind != "f":
        raise TypeError(f"{who}: dtype must be a float dtype, got {dtype}")
    xp = xp or backend.xp()
    shape = tuple(int(value) for value in sizes.values())
    return xp.zeros(shape, dtype=dtype), xp.zeros(shape, dtype=dtype)


def _check_new(who: str, k, v, cached) -> None:
    """k, v: this call's keys and values, (B, Hkv, T_new, D) of the cache's B, Hkv, D and dtype."""
    B, Hkv, _, D = cached.shape
    for name, a in (("k", k), ("v", v)):
        shape = tuple(a.shape)
        if len(shape) != 4 or shape[0] != B or shape[1] != Hkv or shape[3] != D:
            raise ValueError(f"{who}: {name} must be (B, Hkv, T_new, D) = ({B}, {Hkv}, T_new, {D}), got {shape}")
        if a.dtype != cached.dtype:
            raise TypeError(f"{who}: {name} has dtype {a.dtype}, the cache holds {cached.dtype}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"{who}: k has {k.shape[2]} new positions but v has {v.shape[2]}")


class KVCache:
    """Preallocated (B, Hkv, max_len, D) key and value buffers, filled in place from position 0.

    ``update(k, v)`` writes k, v (B, Hkv, T_new, D) at positions ``length .. length + T_new - 1`` and returns views
    (B, Hkv, length + T_new, D) of the filled part: no copy of the prefix, no reallocation.
    """

    def __init__(self, batch_size: int, n_kv_head: int, max_len: int, head_dim: int, dtype=None, xp=None):
        sizes = dict(batch_size=batch_size, n_kv_head=n_kv_head, max_len=max_len, head_dim=head_dim)
        self.k, self.v = _buffers("KVCache", sizes, dtype, xp)  # (B, Hkv, max_len, D) each
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
        _check_new("KVCache", k, v, self.k)
        max_len = self.max_len
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


class RollingKVCache:
    """A ring buffer of the last ``window`` positions' keys and values, (B, Hkv, window, D) each, for sliding-window
    attention: each query sees its last W keys, so older ones are never needed again.

    ``update(k, v)`` takes this call's keys and values (B, Hkv, T_new, D), any T_new (a prefill of several tokens
    too), and returns (B, Hkv, held + T_new, D): the ``held = min(length, window)`` cached positions, oldest first,
    followed by the new ones, in position order, so the attention's causal alignment (the last query on the last
    key) and its window pick exactly the keys the full forward would. Then the last min(T_new, window) new
    positions overwrite the oldest slots. Memory stays 2 * B * Hkv * window * D however long the text grows.
    """

    def __init__(self, batch_size: int, n_kv_head: int, window: int, head_dim: int, dtype=None, xp=None):
        sizes = dict(batch_size=batch_size, n_kv_head=n_kv_head, window=window, head_dim=head_dim)
        self.k, self.v = _buffers("RollingKVCache", sizes, dtype, xp)  # (B, Hkv, W, D): position t in slot t % W
        self.length = 0  # positions seen so far (the next one is position ``length``)

    @property
    def window(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes held by the two ring buffers (fixed: W positions)."""
        return int(self.k.nbytes + self.v.nbytes)

    def reset(self) -> None:
        """Forget every position."""
        self.length = 0

    def _ordered(self, buf):
        """The held positions of ``buf`` (B, Hkv, W, D), oldest first: (B, Hkv, held, D)."""
        W = self.window
        held = min(self.length, W)
        start = (self.length - held) % W  # slot of the oldest held position
        if start + held <= W:
            return buf[:, :, start:start + held]
        return backend.array_module(buf).concatenate([buf[:, :, start:], buf[:, :, :start + held - W]], axis=2)

    def update(self, k, v):
        """Append k, v (B, Hkv, T_new, D) -> (k_all, v_all) (B, Hkv, min(length, W) + T_new, D), oldest first."""
        _check_new("RollingKVCache", k, v, self.k)
        W = self.window
        xp = backend.array_module(self.k)
        T_new = k.shape[2]
        # what attention reads: the held positions (a copy: the ring is overwritten below) then the new ones
        k_all = xp.concatenate([self._ordered(self.k), k], axis=2)
        v_all = xp.concatenate([self._ordered(self.v), v], axis=2)
        # keep the last min(T_new, W) new positions: position t goes to slot t % W
        n = min(T_new, W)
        start = (self.length + T_new - n) % W  # the slot of the first position kept
        first = min(n, W - start)  # how many fit before the ring wraps around to slot 0
        for buf, new in ((self.k, k[:, :, T_new - n:]), (self.v, v[:, :, T_new - n:])):
            buf[:, :, start:start + first] = new[:, :, :first]
            buf[:, :, :n - first] = new[:, :, first:]
        self.length += T_new
        return k_all, v_all

    def __repr__(self) -> str:
        B, Hkv, W, D = self.k.shape
        return (f"RollingKVCache(B={B}, Hkv={Hkv}, window={W}, D={D}, dtype={self.k.dtype}, "
                f"length={self.length})")


def model_window(model) -> int | None:
    """The sliding window W of a model's attention (``config.window``), or None (full causal attention)."""
    return getattr(model.config, "window", None)


def make_kv_caches(model, batch_size: int, max_len: int) -> list:
    """One cache per block of a GPT, in the model's dtype and on its backend (where its weights live).

    A KVCache of max_len positions; for a sliding-window model whose window W is shorter than max_len, a
    RollingKVCache of W positions instead (it never runs out: it forgets what the window no longer sees)."""
    cfg = model.config
    weight = model.wte.weight.data
    xp = backend.array_module(weight)
    window = model_window(model)
    if window is not None and window < max_len:
        return [RollingKVCache(batch_size, cfg.n_kv_head, window, cfg.head_dim, dtype=weight.dtype, xp=xp)
                for _ in range(cfg.n_layer)]
    return [KVCache(batch_size, cfg.n_kv_head, max_len, cfg.head_dim, dtype=weight.dtype, xp=xp)
            for _ in range(cfg.n_layer)]


def kv_cache_nbytes(caches) -> int:
    """Total bytes of a list of caches."""
    return sum(c.nbytes for c in caches)
