"""The train/validation split, and a seeded, resumable sampler of (input, target) batches.

    train_ids, val_ids = train_val_split(ids, val_fraction=0.1)
    sampler = BatchSampler(train_ids, block_size=T, batch_size=B, seed=0)
    x, y = sampler.next()                          # (B, T) int64 on the active backend; y is x shifted by one

Token ids live on the host (NumPy) until a batch is drawn; the batch crosses to the active backend at that one
boundary (``backend.asarray``). Offsets come from a seeded NumPy generator on the host, so a seed means the same
batches on every backend, and ``state_dict()`` (JSON-able) lets a resumed run draw exactly the batches an
uninterrupted one would have drawn.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .ids import host_ids as _host_ids


def train_val_split(ids, val_fraction: float = 0.1, min_length: int = 2):
    """Contiguous split: the first part for training, the last ``val_fraction`` for validation (views, no copy).

    min_length: the shortest part allowed (a sampler with block size T needs T + 1 tokens); ValueError if either
    part would be shorter.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction}")
    if not hasattr(ids, "shape") or len(ids.shape) != 1:
        raise ValueError("train_val_split: ids must be a 1-D array")
    n = int(ids.shape[0])
    n_val = int(round(n * float(val_fraction)))
    n_train = n - n_val
    if n_train < min_length or n_val < min_length:
        raise ValueError(f"train_val_split: {n} tokens split into {n_train} for training and {n_val} for validation, "
                         f"but each part needs at least {min_length}")
    return ids[:n_train], ids[n_train:]


class BatchSampler:
    """Random contiguous windows of a token stream, nanoGPT's get_batch::

        i ~ uniform{0, ..., N - T - 1}  (B of them)
        x[b] = ids[i_b : i_b + T],   y[b] = ids[i_b + 1 : i_b + T + 1]

    ids: (N,) integers on the host (a NumPy array or memmap; never copied whole). block_size: T. batch_size: B.
    vocab_size: when given, every id is checked once here (CuPy would wrap an out-of-range id silently).
    """

    def __init__(self, ids, block_size: int, batch_size: int, seed: int = 0, vocab_size: int | None = None):
        if backend.array_module(ids) is not np:
            raise TypeError("BatchSampler: ids must live on the host (a NumPy array); batches move to the device")
        ids = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if ids.ndim != 1:
            raise ValueError(f"BatchSampler: ids must be 1-D, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"BatchSampler: ids must be integers, got dtype {ids.dtype}")
        for name, v in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"BatchSampler: {name} must be a positive integer, got {v!r}")
        if ids.shape[0] < block_size + 1:
            raise ValueError(f"BatchSampler: {ids.shape[0]} tokens is too short for block_size {block_size} "
                             f"(needs at least {block_size + 1})")
        if vocab_size is not None:
            _host_ids(ids, "BatchSampler", int(vocab_size))
        self.ids = ids
        self.block_size, self.batch_size, self.seed = int(block_size), int(batch_size), int(seed)
        self.batches_drawn = 0
        self._gen = backend.host_rng(self.seed)
        self._window = np.arange(self.block_size + 1, dtype=np.int64)  # (T+1,) offsets inside one window

    def next(self):
        """-> (x, y), each (B, T) int64 on the active backend, with y[:, t] == x[:, t + 1] for t < T - 1."""
        starts = self._gen.integers(0, self.ids.shape[0] - self.block_size, size=self.batch_size, dtype=np.int64)
        chunk = self.ids[starts[:, None] + self._window].astype(np.int64, copy=False)  # (B, T+1)
        self.batches_drawn += 1
        x, y = np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])
        return backend.asarray(x), backend.asarray(y)

    __call__ = next

    def state_dict(self) -> dict:
        """JSON-able: the generator state plus what must match on resume."""
        return {"seed": self.seed, "block_size": self.block_size, "batch_size": self.batch_size,
                "n_tokens": int(self.ids.shape[0]), "batches_drawn": self.batches_drawn,
                "rng": self._gen.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state; block size, batch size and data length must be the ones it was saved with."""
        problems = []
        for key, own in (("block_size", self.block_size), ("batch_size", self.batch_size),
                         ("n_tokens", int(self.ids.shape[0]))):
            if key not in state:
                problems.append(f"missing {key!r}")
            elif state[key] != own:
                problems.append(f"{key} is {state[key]} in the state, {own} here")
        if "rng" not in state:
            problems.append("missing 'rng'")
        if problems:
            raise ValueError("BatchSampler.load_state_dict: the state does not fit this sampler; "
                             + "; ".join(problems))
        try:
            self._gen.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"BatchSampler.load_state_dict: invalid generator state ({exc})") from exc
        self.seed = int(state.get("seed", self.seed))
        self.batches_drawn = int(state.get("batches_drawn", 0))

    def __repr__(self) -> str:
        return (f"BatchSampler(n_tokens={self.ids.shape[0]}, block_size={self.block_size}, "
                f"batch_size={self.batch_size}, seed={self.seed})")
