"""What both data-parallel runners share: how a batch is cut into chunks, how the chunks' losses are weighted,
and how many workers to use.

Maths: the loss is a mean over the kept target positions. With the batch cut into chunks k holding n_k of the
N kept positions, loss = sum_k (n_k / N) loss_k, so d(loss)/d(theta) = sum_k (n_k / N) d(loss_k)/d(theta).
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import backend
from ..kernels.cpu import get_blas_threads, usable_cpus


def warn_if_blas_uncontrolled(where: str) -> None:
    """Replicas each want one BLAS thread; say so once if this process's BLAS cannot be told so
    (npformer.kernels.cpu.blas)."""
    if get_blas_threads() is None:
        warnings.warn(f"{where}: the thread count of this NumPy's BLAS cannot be set from here, so every replica's "
                      "products may use every core at once (slower, still correct); set OPENBLAS_NUM_THREADS=1 "
                      "(or your BLAS's equivalent) before starting Python", RuntimeWarning, stacklevel=3)


def default_workers() -> int:
    """One worker per CPU this process may run on (NumPy backend); 1 on a GPU backend."""
    return usable_cpus() if backend.get_backend() == "numpy" else 1


def add_into(total, part) -> None:
    total += part


def check_batch(where: str, idx, targets) -> None:
    if getattr(idx, "ndim", 0) < 1 or getattr(targets, "shape", None) != idx.shape:
        raise ValueError(f"{where}: idx {getattr(idx, 'shape', None)} and targets "
                         f"{getattr(targets, 'shape', None)} must have the same shape (B, ...)")
    if idx.shape[0] < 1:
        raise ValueError(f"{where}: the batch is empty (idx {idx.shape}); there is nothing to split")


def weighted_mean(losses, shares):
    """sum_k shares[k] * losses[k] as a 0-d array of the losses' dtype: the batch's mean loss."""
    total = losses[0] * shares[0]
    for loss, share in zip(losses[1:], shares[1:]):
        total = total + loss * share
    return np.asarray(total, dtype=losses[0].dtype)


def chunk_shares(targets, chunks, ignore_index: int) -> list[float]:
    """n_k / N for each chunk: its kept targets over the batch's. Each chunk's loss is a mean over its own kept
    positions, so this is the weight that makes the chunks' weighted sum the batch's mean (all ignored: by rows)."""
    kept = [int((targets[a:b] != ignore_index).sum()) for a, b in chunks]
    total = sum(kept)
    return [k / total for k in kept] if total else [(b - a) / targets.shape[0] for a, b in chunks]


def batch_chunks(B: int, workers: int) -> list[tuple[int, int]]:
    """[(start, stop)]: B rows cut into min(workers, B) contiguous chunks whose sizes differ by at most one."""
    n = min(workers, B)
    sizes = [B // n + (1 if k < B % n else 0) for k in range(n)]
    bounds = np.cumsum([0] + sizes)
    return [(int(bounds[k]), int(bounds[k + 1])) for k in range(n)]
