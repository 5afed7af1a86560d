"""Data parallelism over the cores of one machine: a batch split along B across model replicas, one thread each.

Why: a NumPy training step spends most of its time in matrix products, which BLAS already spreads over the
cores, but every elementwise kernel, softmax and LayerNorm between them runs on one core while the other waits
(or spins in BLAS's idle loop). Running one replica per core on its share of the batch, each with a single BLAS
thread, keeps every core busy all through the step: at nanoGPT's shakespeare_char config on 2 cores it turned
1838 ms per step into 1501 ms (benchmarks/train_step.py --workers). NumPy releases the GIL inside products and
ufuncs, so threads can run the replicas side by side and share the parameters' memory outright; at small sizes,
though, the Python between NumPy calls holds the GIL long enough that worker processes
(npformer.parallel.processes, which ``data_parallel`` picks on Linux) are faster.

What a replica is: a copy of the model's modules whose Parameters hold the *same* ``data`` arrays as the model's
(no weights copied; an optimizer step on the model is seen by every replica) but their own ``grad`` arrays and
their own forward caches. The replica of worker 0 is the model itself. Replicas follow the model's parameter
values, train/eval modes and dropout rates at every call; any other state (config flags such as ``recompute``
or ``attn_impl``) is the model's as it was when the runner was built.

Maths: the loss is a mean over the kept target positions. With the batch cut into chunks k holding n_k of the
N kept positions, loss = sum_k (n_k / N) loss_k, so d(loss)/d(theta) = sum_k (n_k / N) d(loss_k)/d(theta): each
replica back-propagates dloss * n_k / N from its own chunk's loss, and the replicas' gradients are then added
into the model's (``+=``: gradient accumulation and tied weights work as without it). The result equals the
one-replica gradient up to float rounding (a different order of summation), and for a given number of workers it
is deterministic.

    from npformer.parallel import DataParallel, data_parallel
    dp = DataParallel(model, workers=2)   # or data_parallel(model): worker processes where they can be forked
    loss = dp.loss(x, y)      # forwards of the chunks, in parallel; the batch's mean loss
    dp.backward()             # backwards of the chunks, in parallel; model's .grad += the batch's gradient
"""

from __future__ import annotations

import copy
from concurrent.futures import wait

import numpy as np

from .. import backend
from ..kernels.cpu import blas_threads, blockwise, single_threaded
from ..nn.dropout import Dropout
from .split import (
    add_into,
    batch_chunks,
    check_batch,
    chunk_shares,
    default_workers,
    warn_if_blas_uncontrolled,
    weighted_mean,
)


class DataParallel:
    """Run ``model.loss`` / ``model.backward`` on ``workers`` chunks of the batch at once, one thread per chunk.

    model: a Module with ``loss(idx, targets, ignore_index=...)`` returning a 0-d mean loss and
        ``backward(dloss)`` (GPT, and any model written the same way). Its parameters must not be replaced by
        arrays of another shape after this is built; their values may change freely (optimizer steps,
        ``load_state_dict``).
    workers: replicas, one thread each; None: ``default_workers()``. 1 runs the model itself, unchanged.

    The model's own ``loss`` / ``backward`` / ``drop_caches`` stay usable; use this object's to go parallel.
    NumPy backend only (on a GPU there is one device to share, not several cores).
    """

    def __init__(self, model, workers: int | None = None):
        workers = default_workers() if workers is None else int(workers)
        if workers < 1:
            raise ValueError(f"DataParallel: workers must be >= 1, got {workers}")
        if workers > 1 and backend.get_backend() != "numpy":
            raise ValueError(f"DataParallel: {workers} workers need the NumPy backend (threads share CPU cores); "
                             f"the backend is {backend.get_backend()!r}: use workers=1")
        self.model = model
        self.workers = workers
        if workers > 1:
            warn_if_blas_uncontrolled("DataParallel")
        self.replicas = [model]
        self._links = []  # per extra replica: what ties it to the model (see _link)
        for _ in range(workers - 1):
            replica = self._replicate(model)
            self.replicas.append(replica)
            self._links.append(self._link(model, replica))
        self._pool = None
        self._pending: list[tuple[object, float]] = []  # (replica, its share n_k / N) awaiting backward

    # -- replicas ----------------------------------------------------------------------------------------------
    @staticmethod
    def _replicate(model):
        """A copy of ``model`` sharing its parameter data, with no caches (gradients: see ``_link``)."""
        memo = {id(p.data): p.data for p in model.parameters()}  # deepcopy hands these back: shared, not copied
        for m in model.modules():  # caches are per replica and refilled by its next forward: do not copy them
            memo.update({id(v): None for v in (getattr(m, name, None) for name in m.caches) if v is not None})
        # gradients too: the replica's come from _link; a copy of the model's would only hold memory
        memo.update({id(p.grad): None for p in model.parameters()})
        if getattr(model, "_flat_grads", None) is not None:
            memo[id(model._flat_grads)] = None
        replica = copy.deepcopy(model, memo)
        replica.drop_caches()
        return replica

    @staticmethod
    def _link(model, replica) -> dict:
        """The (model, replica) parameter pairs, module pairs and Dropout pairs, found once (walking the module
        tree every step would cost more than the step's small kernels at tiny sizes); and the replica's gradients,
        views of one buffer laid out like the model's flattened gradients (``flatten_parameters``) when it has
        them, so that zeroing is one fill and the reduction one add."""
        by_id = {id(p): q for p, q in zip(model.parameters(), replica.parameters(), strict=True)}
        flat = getattr(model, "_flat_grads", None)
        order = flat[0] if flat is not None and len(flat[0]) == len(by_id) else model.parameters()
        pairs = [(p, by_id[id(p)]) for p in order]
        dtype = pairs[0][0].data.dtype if pairs else np.float32
        buffer = np.zeros(sum(p.size for p, _ in pairs), dtype=dtype)
        offset = 0
        for p, q in pairs:
            q.grad = buffer[offset:offset + p.size].reshape(p.data.shape)
            offset += p.size
        modules = list(zip(model.modules(), replica.modules(), strict=True))
        dropouts = [(m, r) for m, r in modules if isinstance(m, Dropout)]
        return dict(pairs=pairs, modules=modules, dropouts=dropouts, grads=buffer)

    def _sync(self, link: dict) -> None:
        """Point a replica at the model's current parameter arrays and modes (cheap: no data moves)."""
        for p, q in link["pairs"]:
            if q.data is not p.data:
                if q.data.shape != p.data.shape:
                    raise RuntimeError("DataParallel: a parameter of the model changed shape since the replicas "
                                       "were made; build a new DataParallel")
                q.data = p.data
            if q.grad.dtype != p.data.dtype:  # after model.astype(...): the one buffer no longer fits
                q.grad = np.zeros_like(p.data)
        for m, r in link["modules"]:
            r.training = m.training
        for m, r in link["dropouts"]:
            r.p = m.p
            # a fresh mask stream per step, drawn from the model's own: replicas never repeat each other's
            # masks, and the model's stream (saved in checkpoints) alone decides them all
            if m.training and m.p > 0.0:
                r.restart(int(m.seeds.integers(0, 2**62)))

    def _zero_grads(self, link: dict) -> None:
        if all(q.grad.base is link["grads"] for _, q in link["pairs"]):
            link["grads"][...] = 0
        else:
            for _, q in link["pairs"]:
                q.grad[...] = 0

    def _add_grads(self, link: dict) -> None:
        """model grads += replica grads: one add over the buffers when both are laid out alike."""
        flat = getattr(self.model, "_flat_grads", None)
        pairs = link["pairs"]
        if (flat is not None and len(flat[0]) == len(pairs) and all(p is f for (p, _), f in zip(pairs, flat[0]))
                and all(p.grad.base is flat[1] and q.grad.base is link["grads"] for p, q in pairs)):
            blockwise(add_into, flat[1], link["grads"])
        else:
            for p, q in pairs:
                p.grad += q.grad

    def _run(self, jobs):
        """Call each job (a no-argument function) on its own thread, the first on this one; return the results."""
        if len(jobs) == 1:
            return [jobs[0]()]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers - 1, thread_name_prefix="npformer-dp")

        def single(job):
            with single_threaded():
                return job()

        with blas_threads(1):
            futures = [self._pool.submit(single, job) for job in jobs[1:]]
            try:
                first = single(jobs[0])
            finally:  # never return (or raise) while a replica still runs: it would race the next call
                wait(futures)
            return [first] + [f.result() for f in futures]  # the first failure, if any, is raised here

    # -- the model's interface, parallel -------------------------------------------------------------------------
    def loss(self, idx, targets, ignore_index: int = -100):
        """idx, targets: (B, T) -> the mean loss over the batch's kept targets (0-d array), as ``model.loss``."""
        self._pending = []  # a loss that fails leaves nothing for backward to use
        check_batch("DataParallel", idx, targets)
        chunks = batch_chunks(idx.shape[0], self.workers)
        extra = {} if ignore_index == -100 else {"ignore_index": ignore_index}  # models without the keyword
        if len(chunks) == 1:
            loss = self.model.loss(idx, targets, **extra)
            self._pending = [(self.model, 1.0)]
            return loss
        replicas = self.replicas[:len(chunks)]
        for link in self._links[:len(chunks) - 1]:
            self._sync(link)
        shares = chunk_shares(targets, chunks, ignore_index)
        losses = self._run([lambda r=r, a=a, b=b: r.loss(idx[a:b], targets[a:b], **extra)
                            for r, (a, b) in zip(replicas, chunks)])
        self._pending = list(zip(replicas, shares))
        return weighted_mean(losses, shares)

    def backward(self, dloss: float = 1.0) -> None:
        """Add d(dloss * loss)/d(param) into every parameter's .grad of the model, as ``model.backward``."""
        if not self._pending:
            raise RuntimeError("DataParallel.backward: call loss(idx, targets) first")
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            self.model.backward(dloss)
            return
        links = self._links[:len(pending) - 1]
        for link in links:  # replicas' gradients hold this batch alone; the model's keep accumulating
            self._zero_grads(link)
        self._run([lambda r=r, s=s: r.backward(dloss * s) for r, s in pending])
        for link in links:
            self._add_grads(link)

    def drop_caches(self) -> None:
        """Forget every replica's forward caches (after an evaluation forward that needs no backward)."""
        self._pending = []
        for r in self.replicas:
            r.drop_caches()

    def close(self) -> None:
        """Stop the worker threads (they also stop when the program ends)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

