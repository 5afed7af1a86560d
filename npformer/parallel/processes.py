"""Data parallelism over worker processes: like ``DataParallel``, without the interpreter lock.

Why processes as well as threads: a step of a small model (nanoGPT's baby GPT, say) is thousands of NumPy calls
on small arrays, and the Python between them holds the interpreter lock; two replicas on threads then spend a
third of the step waiting for it. Replicas in their own processes never wait. Measured on 2 cores at the baby
config (benchmarks/train_step.py): 48 ms per step with one worker, 42 ms with two threads, 33 ms with two
processes; at the shakespeare_char config 1800, 1480 and 1390 ms.

How, on Linux (``fork``):
- The model's parameters move into one buffer of memory shared with the workers (an anonymous shared mmap),
  laid out like ``flatten_parameters`` lays them out, so optimizers keep their one-pass fast path. An optimizer
  step in the main process is what the workers compute with next; no weights are ever sent.
- Each worker is a fork of the main process: its copy of the model *is* its replica. Its gradients live in a
  shared buffer of its own, which the main process adds into the model's after each backward.
- Commands (a chunk of the batch, the modules' modes, the dropout seeds, the backward's scale) and replies (a
  chunk's loss, or a worker's traceback) go over pipes; a batch chunk is a few KiB.
- The main process computes the first chunk itself, alongside the workers.

The maths and the result are those of ``DataParallel`` (see npformer.parallel): equal to the model's own loss and
gradients up to float rounding, deterministic for a given number of workers.

    dp = ProcessDataParallel(model, workers=2)
    loss = dp.loss(x, y)
    dp.backward()
    dp.close()            # stops the workers (also done when the program exits)
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import traceback
import weakref

import numpy as np

from .. import backend
from ..kernels.cpu import blas_threads, blockwise, set_blas_threads, single_threaded
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

_WORKER_ERRORS = {"ValueError": ValueError, "TypeError": TypeError}  # raised as themselves in the main process
_all_workers: "weakref.WeakSet[multiprocessing.Process]" = weakref.WeakSet()


def _forget_workers_in_child() -> None:
    """In a fork of a process that owns workers (a user's os.fork, say): those workers are not this child's.
    multiprocessing's exit handler would otherwise terminate them when the child exits, as it does every child
    process it knows of; it knows of them through a private set, which the child's copy of is cleaned here."""
    children = getattr(multiprocessing.process, "_children", None)
    if children is not None:
        children.difference_update(list(_all_workers))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_in_child)


def processes_available() -> bool:
    """Whether this platform can fork worker processes (Linux and most Unixes; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _shared_zeros(n: int, dtype) -> np.ndarray:
    """A 1-D array of n zeros in anonymous shared memory: a fork sees the same bytes, not a copy."""
    dtype = np.dtype(dtype)
    buffer = mmap.mmap(-1, max(1, n * dtype.itemsize))  # MAP_SHARED | MAP_ANONYMOUS; zero-filled by the OS
    return np.frombuffer(buffer, dtype=dtype, count=n)


def _worker_loop(conn, model, grads: np.ndarray) -> None:
    """A worker process: its (forked) copy of ``model`` runs the commands the main process sends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it then stops us
    os.environ["NPFORMER_NUM_THREADS"] = "1"  # blockwise's thread pool did not survive the fork: never use it
    set_blas_threads(1)
    modules = list(model.modules())
    dropouts = [m for m in modules if isinstance(m, Dropout)]
    while True:
        try:
            seq, command, args = conn.recv()  # seq: the command's number, sent back with the reply
        except EOFError:  # the main process is gone
            return
        try:
            if command == "loss":
                idx, targets, extra, training, seeds = args
                for m, mode in zip(modules, training, strict=True):
                    m.training = mode
                for m, (p, seed) in zip(dropouts, seeds, strict=True):
                    m.p = p
                    if seed is not None:
                        m.restart(seed)
                reply = model.loss(idx, targets, **extra)
            elif command == "backward":
                grads[...] = 0  # this batch's gradient alone; the main process accumulates
                model.backward(args)
                reply = None
            elif command == "drop_caches":
                model.drop_caches()
                reply = None
            elif command == "stop":
                return
            else:
                raise ValueError(f"unknown command {command!r}")
            conn.send((seq, "ok", reply))
        except BaseException as exc:  # noqa: BLE001 -- any failure goes back to the main process, named there
            conn.send((seq, "error", (type(exc).__name__, traceback.format_exc())))


class ProcessDataParallel:
    """``model.loss`` / ``model.backward`` over ``workers`` chunks of the batch at once, one process per chunk.

    model: a GPT-like Module (``loss(idx, targets, ignore_index=...)``, ``backward(dloss)``), NumPy backend.
        Its parameters are moved into shared memory here (values unchanged; ``p.data`` becomes a view of the
        shared buffer), so build the optimizer before or after, either works. Its parameters may change value
        freely (optimizer steps, ``load_state_dict``); if one is replaced by a new array (``astype``), its
        values are copied back into the shared buffer at the next call, which needs the same shape and dtype.
    workers: processes including this one; None: ``default_workers()``.
    """

    def __init__(self, model, workers: int | None = None):
        workers = default_workers() if workers is None else int(workers)
        if workers < 1:
            raise ValueError(f"ProcessDataParallel: workers must be >= 1, got {workers}")
        if backend.get_backend() != "numpy":
            raise ValueError(f"ProcessDataParallel: needs the NumPy backend, not {backend.get_backend()!r}")
        if workers > 1 and not processes_available():
            raise ValueError("ProcessDataParallel: this platform cannot fork worker processes; use DataParallel "
                             "(threads)")
        self.model = model
        self.workers = workers
        self._pending: list[float] = []  # shares of the chunks awaiting backward
        self._broken = False  # set when a command could not be seen through: the pipes can no longer be trusted
        self._seq = 0  # number of the last command sent; each reply carries its command's number
        if workers > 1:
            warn_if_blas_uncontrolled("ProcessDataParallel")
        self._order = self._share_parameters(model)
        self._procs, self._conns, self._grads = [], [], []
        self._modules = list(model.modules())
        self._dropouts = [m for m in self._modules if isinstance(m, Dropout)]
        ctx = multiprocessing.get_context("fork")
        # also runs at exit; only in this process (a fork of it that exits must not stop our workers)
        self._finalizer = weakref.finalize(self, _stop, self._procs, self._conns, os.getpid())
        try:
            for _ in range(workers - 1):
                grads = _shared_zeros(self._data.size, self._data.dtype)
                self._point_grads(grads)  # the fork's parameters take views of its own gradient buffer ...
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_loop, args=(child, model, grads), daemon=True)
                proc.start()
                _all_workers.add(proc)
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
                self._grads.append(grads)
        except BaseException:
            self._finalizer()  # stop the workers already started
            raise
        finally:
            for p, g in zip(self._order, self._own_grads):  # ... and the model gets its own back
                p.grad = g

    # -- shared memory ---------------------------------------------------------------------------------------
    def _share_parameters(self, model) -> list:
        """Move every parameter's data into one shared buffer (flatten_parameters' layout); return the order."""
        params = model.parameters()
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"ProcessDataParallel: the parameters have several dtypes {sorted(map(str, dtypes))}")
        flat = getattr(model, "_flat_grads", None)
        order = flat[0] if flat is not None and len(flat[0]) == len(params) else params
        self._data = _shared_zeros(sum(p.size for p in order), dtypes.pop())
        self._views, offset = [], 0
        for p in order:
            view = self._data[offset:offset + p.size].reshape(p.data.shape)
            view[...] = p.data
            p.data = view
            self._views.append(view)
            offset += p.size
        self._own_grads = [p.grad for p in order]
        return order

    def _point_grads(self, buffer: np.ndarray) -> None:
        offset = 0
        for p in self._order:
            p.grad = buffer[offset:offset + p.size].reshape(p.data.shape)
            offset += p.size

    def _check_parameters(self) -> None:
        """Parameters rebound to new arrays since (astype, a user's assignment): copy them back into place."""
        for p, view in zip(self._order, self._views):
            if p.data is not view:
                if p.data.shape != view.shape or p.data.dtype != view.dtype:
                    raise RuntimeError(f"ProcessDataParallel: a parameter is now {p.data.dtype} {p.data.shape}, "
                                       f"was {view.dtype} {view.shape}; build a new ProcessDataParallel")
                view[...] = p.data
                p.data = view

    # -- talking to the workers --------------------------------------------------------------------------------
    def _receive(self, k: int):
        """Worker k's reply to the command numbered self._seq (or the error it raised, as a RuntimeError)."""
        try:
            seq, status, reply = self._conns[k].recv()
        except (EOFError, OSError):  # EOF, or a reset when it died with a command still unread
            self._broken = True
            code = self._procs[k].exitcode
            raise RuntimeError(f"ProcessDataParallel: worker {k + 1} died (exit code {code}), e.g. killed for "
                               "memory; build a new one") from None
        if seq != self._seq:  # cannot happen while every reply is read; refuse rather than use a stale one
            self._broken = True
            raise RuntimeError(f"ProcessDataParallel: worker {k + 1} answered command {seq}, not {self._seq}")
        if status == "error":
            kind, trace = reply
            last = trace.strip().splitlines()[-1] if trace.strip() else "no message"
            # bad input is a ValueError / TypeError whichever process's rows it was in; anything else a RuntimeError
            raise _WORKER_ERRORS.get(kind, RuntimeError)(
                f"ProcessDataParallel: worker {k + 1} failed: {last}\n(worker's traceback:)\n{trace}")
        return reply

    def _local(self, job):
        """Run the main process's own chunk with one BLAS thread and no helper threads, like the workers."""
        with blas_threads(1), single_threaded():
            return job()

    def _command(self, command: str, args: list, job) -> list:
        """Send ``command`` to workers 1..len(args) (worker k gets args[k-1]), run ``job`` here meanwhile, then read
        every reply: [job's result, reply of worker 1, ...].

        Every reply is read even when something failed, so that none is left in a pipe to be taken for the answer
        to a later command; then the first failure is raised. If that cannot be done (a worker died, Ctrl-C while
        waiting, a send that failed half-way) the runner refuses every later command."""
        if self._broken:
            raise RuntimeError("ProcessDataParallel: an earlier command was not seen through (a worker died or it "
                               "was interrupted while the workers were busy); build a new one")
        self._seq += 1
        sent = 0
        try:
            for k, a in enumerate(args):
                self._conns[k].send((self._seq, command, a))
                sent += 1
        except BaseException as exc:
            self._broken = True  # the workers already sent to will answer a command nobody reads
            if isinstance(exc, OSError):
                raise RuntimeError(f"ProcessDataParallel: worker {sent + 1} is gone ({exc}); build a new one") \
                    from exc
            raise
        results, failure = [], None
        try:
            results.append(self._local(job))
        except BaseException as exc:  # noqa: BLE001 -- raised below, once the workers have answered
            failure = exc
        for k in range(sent):
            try:
                results.append(self._receive(k))
            except (RuntimeError, *_WORKER_ERRORS.values()) as exc:
                failure = failure or exc
            except BaseException:  # Ctrl-C while waiting: replies may be left in the pipes
                self._broken = True
                raise
        if failure is not None:
            raise failure
        return results

    # -- the model's interface, parallel -------------------------------------------------------------------------
    def loss(self, idx, targets, ignore_index: int = -100):
        """idx, targets: (B, T) -> the mean loss over the batch's kept targets (0-d array), as ``model.loss``."""
        self._pending = []  # a loss that fails leaves nothing for backward to use
        check_batch("ProcessDataParallel", idx, targets)
        extra = {} if ignore_index == -100 else {"ignore_index": ignore_index}
        chunks = batch_chunks(idx.shape[0], self.workers)
        if len(chunks) == 1:
            loss = self.model.loss(idx, targets, **extra)
            self._pending = [1.0]
            return loss
        self._check_parameters()
        training = [m.training for m in self._modules]
        idx, targets = np.asarray(idx), np.asarray(targets)
        args = []
        for a, b in chunks[1:]:
            # a fresh mask stream per worker and step, drawn from the model's own (as DataParallel does)
            seeds = [(m.p, int(m.seeds.integers(0, 2**62)) if m.training and m.p > 0.0 else None)
                     for m in self._dropouts]
            args.append((idx[a:b], targets[a:b], extra, training, seeds))
        a, b = chunks[0]
        losses = self._command("loss", args, lambda: self.model.loss(idx[a:b], targets[a:b], **extra))
        shares = chunk_shares(targets, chunks, ignore_index)
        self._pending = shares
        return weighted_mean(losses, shares)

    def backward(self, dloss: float = 1.0) -> None:
        """Add d(dloss * loss)/d(param) into every parameter's .grad of the model, as ``model.backward``."""
        if not self._pending:
            raise RuntimeError("ProcessDataParallel.backward: call loss(idx, targets) first")
        shares, self._pending = self._pending, []
        if len(shares) == 1:
            self.model.backward(dloss)
            return
        self._command("backward", [dloss * share for share in shares[1:]],
                      lambda: self.model.backward(dloss * shares[0]))
        for k in range(len(shares) - 1):
            self._add_grads(self._grads[k])

    def _add_grads(self, buffer: np.ndarray) -> None:
        flat = getattr(self.model, "_flat_grads", None)
        if flat is not None and all(p is q for p, q in zip(flat[0], self._order)) and \
                all(p.grad.base is flat[1] for p in self._order) and flat[1].size == buffer.size:
            blockwise(add_into, flat[1], buffer)
            return
        offset = 0
        for p in self._order:
            p.grad += buffer[offset:offset + p.size].reshape(p.grad.shape)
            offset += p.size

    def drop_caches(self) -> None:
        """Forget every replica's forward caches (after an evaluation forward that needs no backward)."""
        self._pending = []
        self._command("drop_caches", [None] * len(self._conns), self.model.drop_caches)

    def close(self) -> None:
        """Stop the worker processes (also done at exit). The model keeps working on its own."""
        self._finalizer()


def _stop(procs, conns, owner: int) -> None:
    if os.getpid() != owner:  # a fork of the owner (a user's os.fork, say) is exiting: the workers are not its
        return
    for conn in conns:
        try:
            conn.send((0, "stop", None))
        except (BrokenPipeError, OSError):
            pass
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
    for conn in conns:
        conn.close()
