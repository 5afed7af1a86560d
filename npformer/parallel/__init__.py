"""Data parallelism: a batch split along B across model replicas.

On one machine ``DataParallel`` runs the replicas on threads, ``ProcessDataParallel`` in forked worker processes
over shared memory; ``data_parallel`` picks one. Across machines ``MPIDataParallel`` (npformer.parallel.mpi, with
the optional ``mpi`` extra) runs one replica per MPI rank, each of which may split its rows again locally. All
give the model's own loss and gradients up to float rounding.
"""

from __future__ import annotations

import sys

from .mpi import MPIDataParallel
from .processes import ProcessDataParallel, processes_available
from .split import default_workers
from .threads import DataParallel

PARALLEL_MODES = ("auto", "threads", "processes")


def data_parallel(model, workers: int | None = None, mode: str = "auto"):
    """The runner for ``model``: ``DataParallel`` (threads) or ``ProcessDataParallel`` (processes).

    workers: None for ``default_workers()``; 1 gives a DataParallel that runs the model itself, unchanged.
    mode: "threads", "processes", or "auto": processes on Linux, else threads (macOS lists fork too, but its
        Accelerate BLAS does not survive one, and there is no /proc to control BLAS threads with).
    Processes are the faster at small sizes, where threads queue for the interpreter lock (2 cores, nanoGPT's
    baby GPT: 35 against 42 ms per step); at large sizes the two are level.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"data_parallel: mode must be one of {PARALLEL_MODES}, got {mode!r}")
    workers = default_workers() if workers is None else int(workers)
    if workers <= 1 or mode == "threads":
        return DataParallel(model, workers)
    if mode == "auto" and not (sys.platform.startswith("linux") and processes_available()):
        return DataParallel(model, workers)
    return ProcessDataParallel(model, workers)


__all__ = ["PARALLEL_MODES", "DataParallel", "MPIDataParallel", "ProcessDataParallel", "data_parallel",
           "default_workers", "processes_available"]
