"""The training loop every script shares: schedule, gradient accumulation, clipping, AdamW, periodic validation,
a live progress line, a CSV of the loss history (and a PNG plot when matplotlib is there), gradient flow at the
logged steps (per-layer gradient norms and update-to-parameter ratios: ``gradient_flow.csv`` and, at the end,
``gradient_flow.png``), atomic checkpoints, exact resume, and a guard that stops on a non-finite loss with the
last good checkpoint left intact.

    trainer = Trainer(model, TrainConfig(...), train_ids, val_ids, meta={"tokenizer": tok.to_dict()})
    trainer.run()

Under ``mpiexec -n N`` (``TrainConfig.mpi``, on by default when launched so) every rank runs this same loop:
each computes its rows of every batch (npformer.parallel.mpi), evaluation included, so all ranks stay in step;
rank 0 alone prints and writes the checkpoint, the CSVs and the plots (``is_root``); ``resume`` has rank 0 read
the checkpoint and hands every rank its bytes, so the machines need no shared file system.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time

import numpy as np

from .. import backend
from ..data import BatchSampler
from ..inspect.gradient_flow import FIELDS as GRADIENT_FLOW_FIELDS
from ..inspect.gradient_flow import GradientFlowProbe
from ..io.atomic import SHARED, atomic_open
from ..kernels import use_kernels
from ..kernels.cpu import usable_cpus
from ..nn import Dropout
from ..parallel import data_parallel, default_workers
from ..parallel.mpi import MPIDataParallel, broadcast_file, launched_size, node_rank_and_size, world
from .checkpoint import CheckpointError, load_checkpoint, load_checkpoint_bytes, save_checkpoint
from .config import TrainConfig
from .optim import AdamW, clip_grad_norm, param_groups
from .schedules import constant, warmup_cosine


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) stopped being finite; the message names the step and the last good
    checkpoint."""


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Trainer:
    """Trains ``model`` (anything with ``loss(x, y)``, ``backward(dloss)``, ``named_parameters()``,
    ``state_dict()``, ``config.to_dict()`` and ``config.block_size``) on token arrays.

    train_ids, val_ids: 1-D integer NumPy arrays on the host. meta: extra JSON-able data saved in every checkpoint
    (the tokenizer, say).
    """

    CHECKPOINT = "ckpt.npz"
    HISTORY = "history.csv"
    GRADIENT_FLOW = "gradient_flow.csv"

    def __init__(self, model, config: TrainConfig, train_ids, val_ids, meta: dict | None = None):
        config, notes = config.fitted()  # a short run gets a schedule that fits it, and a note saying so
        self.model, self.cfg, self.meta = model, config, dict(meta or {})
        # MPI: every rank runs this same loop on its rows of each batch; rank 0 alone prints and writes files
        self.mpi = config.mpi if config.mpi is not None else launched_size() > 1
        if config.zero1 and not self.mpi:
            raise ValueError("TrainConfig: zero1 shards the optimizer over MPI ranks, and this run is not an MPI "
                             "run (launch it with mpiexec -n N, or set mpi)")
        self.comm = world() if self.mpi else None
        self.rank = self.comm.Get_rank() if self.mpi else 0
        for note in notes:
            self._log(f"note: {note}")
        # loss / backward / drop_caches go through the runner: the model itself, or its replicas in parallel
        if self.mpi:
            workers = config.workers
            node_size = node_rank_and_size(self.comm)[1]
            if workers is None:  # this machine's cores shared out among its ranks
                workers = max(1, default_workers() // node_size)
            if usable_cpus() * node_size < (os.cpu_count() or 1):
                self._log(f"note: mpiexec bound each rank to {usable_cpus()} of this machine's {os.cpu_count()} cores; "
                          "to use them all, add --bind-to none to mpiexec")
            self.runner = MPIDataParallel(model, self.comm, workers=min(workers, config.batch_size),
                                          mode=config.parallel, check_every=config.check_every)
            self._check_same_data(train_ids, val_ids)
        else:
            workers = default_workers() if config.workers is None else config.workers
            self.runner = data_parallel(model, min(workers, config.batch_size), config.parallel)  # no idle replicas
        T = model.config.block_size
        self.train_batches = BatchSampler(train_ids, T, config.batch_size, seed=config.seed)
        self.val_batches = BatchSampler(val_ids, T, config.batch_size, seed=config.seed + 1)
        groups = param_groups(model.named_parameters(), config.weight_decay)
        if config.zero1:
            from .zero import ZeroAdamW

            self.optimizer = ZeroAdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2),
                                       comm=self.comm)
        else:
            self.optimizer = AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2))
        decay_iters = config.lr_decay_iters or config.max_iters
        self.schedule = (warmup_cosine(config.learning_rate, config.warmup_iters, decay_iters, config.min_lr)
                         if config.decay_lr else constant(config.learning_rate))
        self.step = 0
        self._all_finite = None  # device flag: every loss and norm since the last synced step was finite
        self._last_check = 0  # the step after the last synced check
        self.history: list[dict] = []  # one row per log point: step, train_loss, val_loss, lr, tokens_per_s
        # one row per layer per logged step: step, layer, grad_norm, update_ratio, param_norm (npformer.inspect)
        self.gradient_flow: list[dict] = []
        self._probe = GradientFlowProbe(model.named_parameters())
        self.last_checkpoint_step: int | None = None
        self._resumed_at: int | None = None  # the step a resume restored: its evaluation already happened
        self.tokens_per_step = config.batch_size * config.grad_accum * T

    # -- paths -------------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> str | None:
        """Where ``save`` writes and ``resume`` reads (None without an out_dir)."""
        return self._path(self.CHECKPOINT)

    def last_checkpoint_note(self) -> str:
        """Where the last good state is, for a message after a stop: "the last checkpoint is PATH (step N)"."""
        if self.last_checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last checkpoint is {self.checkpoint_path} (step {self.last_checkpoint_step})"

    @property
    def is_root(self) -> bool:
        """Whether this process prints and writes files: always, except on MPI ranks other than 0."""
        return self.rank == 0

    def _check_same_data(self, train_ids, val_ids) -> None:
        """MPI: every rank must hold the same tokens (each draws the same batches from them); refuse otherwise."""
        import hashlib

        digest = hashlib.blake2b(digest_size=16)
        for ids in (train_ids, val_ids):
            ids = np.ascontiguousarray(ids)
            digest.update(f"{ids.dtype.str}{ids.shape}".encode())
            digest.update(memoryview(ids).cast("B"))
        mine = np.frombuffer(digest.digest(), dtype=np.uint64)
        everyone = np.empty((self.comm.Get_size(), mine.size), dtype=np.uint64)
        self.comm.Allgather(mine, everyone)
        differ = [r for r in range(len(everyone)) if not np.array_equal(everyone[r], everyone[0])]
        if differ:
            raise ValueError(f"the training or validation tokens on MPI rank(s) {differ} differ from rank 0's: every "
                             "rank draws the same batches, so every machine needs the same data (the same file, and "
                             "the same tokenizer)")

    def _path(self, name: str) -> str | None:
        return None if self.cfg.out_dir is None else os.path.join(self.cfg.out_dir, name)

    # -- evaluation ------------------------------------------------------------------------------------------
    def estimate_loss(self, batches: BatchSampler) -> float:
        """Mean loss over eval_iters batches, in eval mode (no dropout); gradients untouched."""
        self.model.eval()
        total = None
        for _ in range(self.cfg.eval_iters):
            x, y = batches.next()
            loss = self.runner.loss(x, y)
            total = loss if total is None else total + loss  # summed where it lives: one transfer at the end
        self.runner.drop_caches()  # evaluation needs no backward: free what its forward passes kept
        self.model.train()
        return backend.to_float(total) / self.cfg.eval_iters

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _dropout_states(self) -> list:
        return [m.rng_state() for m in self.model.modules() if isinstance(m, Dropout)]

    def _set_dropout_states(self, states: list) -> None:
        if not isinstance(states, list):
            raise CheckpointError(f"dropout_rngs must be a list, got {type(states).__name__}")
        dropouts = [m for m in self.model.modules() if isinstance(m, Dropout)]
        if len(states) != len(dropouts):
            raise CheckpointError(f"checkpoint has {len(states)} dropout generator states, the model {len(dropouts)}")
        for m, state in zip(dropouts, states):
            m.set_rng_state(state)

    def save(self) -> str | None:
        """Write the checkpoint (atomically). With MPI every rank calls it (a sharded optimizer gathers its state)
        and rank 0 alone writes."""
        path = self._path(self.CHECKPOINT)
        if path is None:
            return None
        collective = getattr(self.optimizer, "comm", None) is not None
        optimizer_state = self.optimizer.state_dict() if self.is_root or collective else None
        if not self.is_root:
            self.last_checkpoint_step = self.step
            return path
        os.makedirs(self.cfg.out_dir, exist_ok=True)
        meta = dict(self.meta)
        meta.update(
            config=self.model.config.to_dict(),
            train_config=dataclasses.asdict(self.cfg),
            step=self.step,
            train_sampler=self.train_batches.state_dict(),
            val_sampler=self.val_batches.state_dict(),
            dropout_rngs=self._dropout_states(),
            history=self.history,
            gradient_flow=self.gradient_flow,
            workers=self._workers_used(),  # results depend on it (float rounding): see resume
        )
        save_checkpoint(path, params=self.model.state_dict(), meta=meta, optimizer=optimizer_state)
        self.last_checkpoint_step = self.step
        return path

    def resume(self, path: str | None = None) -> None:
        """Restore parameters, optimizer, samplers, dropout generators and step from a checkpoint, so the run
        continues exactly as an uninterrupted one would."""
        path = path or self._path(self.CHECKPOINT)
        if self.mpi:  # rank 0 reads the file and every rank gets its bytes: no shared file system needed
            try:
                data = broadcast_file(path, self.comm)
            except FileNotFoundError:
                raise CheckpointError(f"load_checkpoint: {path!r}: no such file (on MPI rank 0)") from None
            ckpt = load_checkpoint_bytes(data, path)
        else:
            ckpt = load_checkpoint(path)
        meta = ckpt.meta
        missing = [k for k in ("step", "train_sampler", "val_sampler") if k not in meta]
        if ckpt.optimizer is None:
            missing.append("optimizer state")
        if missing:
            raise CheckpointError(f"{path}: cannot resume training from it, it has no {', '.join(missing)} "
                                  "(was it written by another program?)")
        if not isinstance(meta["step"], int) or isinstance(meta["step"], bool) or meta["step"] < 0:
            raise CheckpointError(f"{path}: step must be a non-negative integer, got {meta['step']!r}")
        # each entry is checked by the object it restores; an error names the file and the entry (the trainer is
        # then partly restored: build a new one)
        for what, restore, state in (("parameters", self.model.load_state_dict, ckpt.params),
                                     ("optimizer", self.optimizer.load_state_dict, ckpt.optimizer),
                                     ("train_sampler", self.train_batches.load_state_dict, meta["train_sampler"]),
                                     ("val_sampler", self.val_batches.load_state_dict, meta["val_sampler"]),
                                     ("dropout_rngs", self._set_dropout_states, meta.get("dropout_rngs", []))):
            try:
                restore(state)
            except CheckpointError:
                raise
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise CheckpointError(f"{path}: {what}: {exc}") from None
        self.step = meta["step"]
        history = meta.get("history", [])
        self.history = list(history) if isinstance(history, list) else []
        flow = meta.get("gradient_flow", [])
        self.gradient_flow = list(flow) if isinstance(flow, list) else []
        self.last_checkpoint_step = self._resumed_at = self.step
        saved_workers = meta.get("workers")
        if saved_workers is not None and saved_workers != self._workers_used():
            self._log(f"note: {path} was trained with {saved_workers} data-parallel worker(s), this run uses "
                      f"{self._workers_used()}; training continues, but not bit for bit as the first run would have "
                      "(the batch is split, and its gradient summed, another way)")

    def _workers_used(self) -> int:
        """Replicas a batch is actually split over: no more than it has rows."""
        return min(self.runner.workers, self.cfg.batch_size)

    # -- the loop ----------------------------------------------------------------------------------------------
    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        where = (f"the last good checkpoint ({self._path(self.CHECKPOINT)}, step {self.last_checkpoint_step}) is "
                 "intact" if self.last_checkpoint_step is not None else "no checkpoint was written")
        return TrainingDiverged(f"training stopped at step {self.step}: {what} is {value}; {where}. "
                                "Try a lower learning rate or stronger gradient clipping.")

    def _log(self, text: str) -> None:
        if not self.cfg.quiet and self.is_root:
            print(text, flush=True)

    def train_step(self, sync: bool = True, record: bool | None = None) -> tuple[float, float]:
        """One optimizer step (grad_accum micro-batches). Returns (loss, gradient norm) as floats, or (nan, nan)
        with ``sync=False`` on a device backend, which then makes no device-to-host transfer at all: the step's
        loss and norm stay on the device, and whether they were finite is folded into a device flag that the
        next synced step reads (``run`` syncs only at the steps it logs, evaluates or saves). On the host,
        checking costs nothing, so every step is checked (and a divergence is named at its own step).

        record (default: ``sync``): also measure this step's gradient flow (npformer.inspect.gradient_flow) into
        ``self.gradient_flow``. Its figures ride in the step's one transfer: on a device that transfer then
        comes after the optimizer step (as at unsynced steps, a non-finite step has been applied when it is
        reported); ``run`` records at the steps it logs."""
        cfg, model = self.cfg, self.model
        record = sync if record is None else record
        lr = self.schedule(self.step)
        self.optimizer.set_lr(lr)
        model.zero_grad()
        loss_sum = None
        for _ in range(cfg.grad_accum):
            x, y = self.train_batches.next()
            loss = self.runner.loss(x, y)
            self.runner.backward(1.0 / cfg.grad_accum)  # gradients add up: the mean over micro-batches
            loss_sum = loss if loss_sum is None else loss_sum + loss
        loss = loss_sum / cfg.grad_accum
        if record:
            self._probe.before_step()  # gradients as backward left them, before clipping
        norm = clip_grad_norm(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        on_host = backend.on_host(loss)
        # the finite flag is read now, except on a device at a recorded step: then it comes home with the flow
        read_now = on_host or (sync and not record)
        loss_value, norm_value, _ = self._check_finite(loss, norm, read_now)
        with use_kernels(getattr(getattr(model, "config", None), "kernels", None)):  # the model's tier, if pinned
            self.optimizer.step()
        if record:
            flow = self._probe.after_step()
            if on_host:
                host_flow = backend.to_numpy(flow)
            else:
                loss_value, norm_value, host_flow = self._check_finite(loss, norm, True, extra=flow)
            self.gradient_flow.extend(self._probe.rows(self.step + 1, host_flow))
        self.step += 1
        return loss_value, norm_value

    def _check_finite(self, loss, norm, sync: bool, extra=None) -> tuple[float, float, object]:
        """Fold this step's loss and norm into the device flag ``all finite since the last check``; when ``sync``,
        read it with the step's loss and norm (and ``extra``, a vector of the loss's dtype) in one transfer and
        raise TrainingDiverged if any was not finite. Returns (loss, norm, extra on the host or None)."""
        xp = backend.array_module(loss)
        values = [loss] + ([] if norm is None else [norm.astype(loss.dtype)])
        finite = xp.isfinite(xp.stack(values)).all()
        self._all_finite = finite if self._all_finite is None else (self._all_finite & finite)
        if not sync:
            return float("nan"), float("nan"), None
        parts = [xp.stack(values), self._all_finite.astype(loss.dtype)[None]]
        if extra is not None:
            parts.append(extra.astype(loss.dtype))
        host = backend.to_numpy(xp.concatenate(parts))
        self._all_finite = None
        n = len(values) + 1
        loss_value = float(host[0])
        norm_value = float(host[1]) if norm is not None else float("nan")
        if not math.isfinite(loss_value):
            raise self._diverged("the training loss", loss_value)
        if not math.isfinite(norm_value) and norm is not None:
            raise self._diverged("the gradient norm", norm_value)
        if host[n - 1] != 1.0:
            raise self._diverged(f"a training loss or gradient norm since step {self._last_check}", "not finite")
        self._last_check = self.step + 1
        return loss_value, norm_value, host[n:] if extra is not None else None

    def run(self) -> list[dict]:
        cfg = self.cfg
        if cfg.out_dir and self.is_root:
            os.makedirs(cfg.out_dir, exist_ok=True)
        start = time.perf_counter()
        start_step = self.step
        recent_tokens, recent_time = 0, 0.0
        train_loss = float("nan")
        while self.step < cfg.max_iters:
            if self.step % cfg.eval_interval == 0 and self.step != self._resumed_at:
                self._evaluate(train_loss, start, start_step)
            t0 = time.perf_counter()
            # a device sync only where the loss is shown, or before an evaluation (which saves a checkpoint)
            after = self.step + 1
            logged = after % cfg.log_interval == 0 or after == cfg.max_iters
            train_loss, _ = self.train_step(sync=logged or after % cfg.eval_interval == 0, record=logged)
            recent_time += time.perf_counter() - t0
            recent_tokens += self.tokens_per_step
            if self.step % cfg.log_interval == 0 or self.step == cfg.max_iters:
                rate = recent_tokens / max(recent_time, 1e-9)
                left = (cfg.max_iters - self.step) * self.tokens_per_step / max(rate, 1e-9)
                self._log(f"step {self.step:5d}/{cfg.max_iters} | loss {train_loss:.4f} | "
                          f"lr {self.optimizer.lr:.2e} | {rate:,.0f} tok/s | left {_fmt_time(left)}"
                          + self._progress_note())
                self.history.append(dict(step=self.step, train_loss=train_loss, val_loss="",
                                         lr=self.optimizer.lr, tokens_per_s=round(rate, 1)))
                recent_tokens, recent_time = 0, 0.0
        self._evaluate(train_loss, start, start_step)
        self._write_history()
        if self.is_root:
            plot_gradient_flow(self.gradient_flow, self._path("gradient_flow.png"))
        return self.history

    def _progress_note(self) -> str:
        """" | NOTE" when the model has ``progress_note()`` returning a non-empty str (a mixture-of-experts GPT
        reports its expert utilisation this way), else ""."""
        note_of = getattr(self.model, "progress_note", None)
        if not callable(note_of):
            return ""
        note = note_of()
        if not isinstance(note, str):
            raise TypeError(f"{type(self.model).__name__}.progress_note() must return a str, got "
                            f"{type(note).__name__}")
        return f" | {note}" if note else ""

    def _evaluate(self, train_loss: float, start: float, start_step: int) -> None:
        val = self.estimate_loss(self.val_batches)
        if not math.isfinite(val):
            raise self._diverged("the validation loss", val)
        self.history.append(dict(step=self.step, train_loss=train_loss if math.isfinite(train_loss) else "",
                                 val_loss=val, lr=self.schedule(self.step), tokens_per_s=""))
        self._log(f"step {self.step:5d}: val loss {val:.4f} ({_fmt_time(time.perf_counter() - start)} elapsed)")
        if self.step > start_step or self.last_checkpoint_step is None:
            self.save()
            self._write_history()

    @property
    def final_val_loss(self) -> float:
        vals = [row["val_loss"] for row in self.history if row["val_loss"] != ""]
        return float(vals[-1]) if vals else float("nan")

    def _write_history(self) -> None:
        path = self._path(self.HISTORY)
        if path is None or not self.is_root:
            return
        with atomic_open(path, "w", newline="", permissions=SHARED) as f:
            writer = csv.DictWriter(f, fieldnames=["step", "train_loss", "val_loss", "lr", "tokens_per_s"])
            writer.writeheader()
            writer.writerows(self.history)
        plot_history(self.history, self._path("loss.png"))
        path = self._path(self.GRADIENT_FLOW)
        with atomic_open(path, "w", newline="", permissions=SHARED) as f:
            writer = csv.DictWriter(f, fieldnames=GRADIENT_FLOW_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.gradient_flow)


def plot_gradient_flow(rows: list[dict], path: str | None) -> bool:
    """Write the gradient-flow PNG (npformer.inspect.plots) when matplotlib is installed; return whether it did."""
    if path is None or not rows:
        return False
    try:
        from ..inspect.plots import plot_gradient_flow as plot

        plot(rows, path)
    except ImportError:  # matplotlib is optional (MissingPlotExtra, an ImportError, comes at the plot)
        return False
    return True


def plot_history(history: list[dict], path: str | None) -> bool:
    """Write a PNG of train and validation loss when matplotlib is installed; return whether it did."""
    if path is None:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # matplotlib is optional
        return False
    train = [(r["step"], r["train_loss"]) for r in history if r["train_loss"] != "" and r["val_loss"] == ""]
    val = [(r["step"], r["val_loss"]) for r in history if r["val_loss"] != ""]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*np.array(train).T, label="train", lw=1)
    if val:
        ax.plot(*np.array(val).T, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
