"""Token ids handed to a tokenizer's decode: any sequence or array of either backend, brought to the host."""

from __future__ import annotations

import numpy as np

from .. import backend


def host_ids(ids, where: str, vocab_size: int | None = None) -> np.ndarray:
    """Token ids (list, NumPy or CuPy array) -> a 1-D NumPy integer array, checked against the vocabulary."""
    arr = backend.to_numpy(ids) if hasattr(ids, "dtype") else np.asarray(list(ids))
    if arr.size == 0:
        return np.zeros((0,), dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{where}: ids must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{where}: ids must be integers, got dtype {arr.dtype}")
    if vocab_size is not None:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{where}: id {bad} is outside the vocabulary [0, {vocab_size})")
    return arr
