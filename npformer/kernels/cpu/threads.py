"""Blockwise elementwise work on the host: cache-sized blocks of rows, spread over a few threads.

CPU machinery of the fast tier (npformer.kernels): the in-place LayerNorm, GELU, softmax and AdamW kernels hand
their per-block work to ``blockwise``; the data-parallel runners cap it with ``single_threaded``. The reference
tier (npformer.functional) never uses it.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from ...backend import array_module

# Measured on a 2-core Zen4 (GELU, LayerNorm, AdamW): blocks of 32K elements were best on one thread but lost on
# two (every ufunc call hands the GIL over, and small blocks make many calls); 128K-element blocks (512 KiB in
# float32, still cache-resident) gave 1.4-1.7x on two threads at the 10.8M-parameter GPT's sizes.
BLOCK_ELEMENTS = 131072  # per array and block
PARALLEL_MIN_ELEMENTS = 1 << 20  # smaller jobs run on the calling thread (at 0.4M, two threads only broke even)
_pool = None


_thread_budget = threading.local()  # .threads: this thread's cap on blockwise threads (see single_threaded)


@contextlib.contextmanager
def single_threaded():
    """Within the block, ``blockwise`` calls made from *this* thread run on it alone, with no helper threads.

    ``npformer.parallel.DataParallel`` runs one model replica per core; each replica's thread enters this so
    that its elementwise kernels do not start helpers that would fight the other replicas for the cores.
    """
    previous = getattr(_thread_budget, "threads", None)
    _thread_budget.threads = 1
    try:
        yield
    finally:
        _thread_budget.threads = previous


def num_threads() -> int:
    """Threads ``blockwise`` uses: 1 inside ``single_threaded()``, else $NPFORMER_NUM_THREADS, else the CPUs this
    process may run on (at most 8)."""
    if getattr(_thread_budget, "threads", None) is not None:
        return _thread_budget.threads
    env = os.environ.get("NPFORMER_NUM_THREADS")
    if env:
        return max(1, int(env))
    return min(usable_cpus(), 8)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask on Linux, else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _thread_pool(workers: int):
    global _pool
    if _pool is None or _pool._max_workers < workers:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npformer")
    return _pool


def blockwise(kernel, *arrays, block_elements: int | None = None, parallel_min: int | None = None) -> None:
    """Run ``kernel(*views)`` over matching blocks of rows of ``arrays`` (all with the same first axis N).

    The kernel computes in place into the output arrays among ``arrays`` (``out=`` ufuncs) and must treat each
    block independently (row-wise or elementwise work). On NumPy the rows are cut into blocks of about
    ``block_elements`` (default ``BLOCK_ELEMENTS``) elements of the first array, so a kernel's several passes
    over a block run in the cache instead of streaming whole arrays through memory, and large jobs are split
    over ``num_threads()`` threads (NumPy releases the GIL inside each ufunc call). "Large" means at least
    ``parallel_min`` elements in the first array (default ``PARALLEL_MIN_ELEMENTS``): a kernel doing much work
    per element (AdamW's) pays for the threads at smaller sizes. On CuPy the kernel runs once on the whole arrays.
    """
    if arrays[0].ndim == 0 or array_module(*arrays) is not np or arrays[0].shape[0] <= 1:
        kernel(*arrays)
        return
    n = arrays[0].shape[0]
    block_elements = BLOCK_ELEMENTS if block_elements is None else block_elements
    row_size = max(1, arrays[0].size // n)
    rows = max(1, block_elements // row_size)  # rows per block
    if rows >= n:
        kernel(*arrays)
        return

    parallel_min = PARALLEL_MIN_ELEMENTS if parallel_min is None else parallel_min
    workers = min(num_threads() if arrays[0].size >= parallel_min else 1, -(-n // rows))
    if workers == 1:
        for s in range(0, n, rows):
            kernel(*(a[s:s + rows] for a in arrays))
        return
    # Each thread takes the next block nobody has taken yet, the calling thread included. So when another
    # process holds a core and a helper thread is not scheduled, the calling thread does the work itself and
    # only cancels the helper's job, instead of waiting a scheduler time slice for it.
    starts = iter(range(0, n, rows))
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                s = next(starts, None)
            if s is None:
                return
            kernel(*(a[s:s + rows] for a in arrays))

    futures = [_thread_pool(workers - 1).submit(run) for _ in range(workers - 1)]
    run()
    for f in futures:
        if not f.cancel():  # started: it is finishing its last block
            f.result()
