"""TrainConfig: how the training loop trains, validated, with its schedule fitted to short runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..parallel import PARALLEL_MODES


@dataclass
class TrainConfig:
    """How to train (nanoGPT's train.py defaults, scaled to a CPU)."""

    max_iters: int = 2000
    batch_size: int = 12
    grad_accum: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: = max_iters
    decay_lr: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    out_dir: str | None = None  # checkpoints and loss history go here; None: nothing written
    seed: int = 1337
    quiet: bool = False
    # model replicas training on slices of each batch at once, each on one core with one BLAS thread
    # (npformer.parallel: worker processes on Linux, threads elsewhere or with parallel="threads"); None: one
    # per core on the NumPy backend. Results depend on the number (float rounding), so a resumed run continues
    # bit for bit only with the same number.
    workers: int | None = 1
    parallel: str = "auto"  # with workers > 1: "threads", "processes", or "auto" (processes on Linux, else threads)
    # data-parallel over the ranks of an MPI job (mpiexec -n N; npformer.parallel.mpi): every rank computes its rows
    # of the global batch, ``workers`` is then the local workers per rank (None: this machine's cores shared out
    # among its ranks). None: on when launched by mpiexec with more than one process.
    mpi: bool | None = None
    zero1: bool = False  # with MPI: AdamW's moments sharded over the ranks (ZeRO stage 1; npformer.train.zero)
    check_every: int = 100  # with MPI: compare a checksum of the parameters across ranks every this many batches

    def validate(self) -> None:
        problems = []
        if self.parallel not in PARALLEL_MODES:
            problems.append(f"parallel must be one of {PARALLEL_MODES}, got {self.parallel!r}")
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be >= 1 or None (one per core), got {self.workers}")
        if self.check_every < 0:
            problems.append(f"check_every must be >= 0 (0: never), got {self.check_every}")
        if self.zero1 and self.mpi is False:
            problems.append("zero1 shards the optimizer over MPI ranks; it needs mpi (not --no-mpi)")
        for name in ("max_iters", "batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.min_lr < 0:
            problems.append("learning_rate must be > 0 and min_lr >= 0")
        elif self.decay_lr and self.min_lr > self.learning_rate:
            problems.append(f"min_lr ({self.min_lr}) exceeds learning_rate ({self.learning_rate}): the schedule "
                            "would decay upwards")
        if self.warmup_iters < 0:
            problems.append(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.lr_decay_iters is not None and self.lr_decay_iters < 1:
            problems.append(f"lr_decay_iters must be >= 1 or None (= max_iters), got {self.lr_decay_iters}")
        if problems:
            raise ValueError("TrainConfig: " + "; ".join(problems))

    def fitted(self) -> tuple["TrainConfig", list[str]]:
        """This config with its schedule fitted to a short run, and a note for each change.

        A run shorter than its warmup still gets one: a warmup as long as the decay (``lr_decay_iters``, or
        ``max_iters`` when that is None) shrinks to a tenth of it. ``lr_decay_iters`` longer than the run is left
        alone: it is how a run is made to continue later exactly as one long run would. Settings that contradict
        each other outright (min_lr above learning_rate) stay errors."""
        self.validate()
        fitted = dataclasses.replace(self)
        if not self.decay_lr:
            return fitted, []
        fitted.warmup_iters, note = fit_warmup(fitted.warmup_iters, fitted.lr_decay_iters or fitted.max_iters,
                                               "warmup_iters")
        return fitted, [note] if note else []


def fit_warmup(warmup: int, decay: int, name: str = "warmup") -> tuple[int, str | None]:
    """A warmup that fits a ``decay``-step schedule (shorter than it): unchanged when it fits, else a tenth of the
    schedule; with a note saying so."""
    if warmup < decay:
        return warmup, None
    return decay // 10, f"{name} ({warmup}) does not fit in the {decay}-step schedule: it shrinks to {decay // 10}"


def check_positive(config, names) -> None:
    """ValueError naming every field of ``config`` among ``names`` that is not a positive integer."""
    bad = [f"{n} must be a positive integer, got {getattr(config, n)!r}" for n in names
           if not isinstance(getattr(config, n), int) or getattr(config, n) < 1]
    if bad:
        raise ValueError(f"{type(config).__name__}: " + "; ".join(bad))
