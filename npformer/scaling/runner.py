"""Training one run of the grid, resumable, and measuring what the planner needs (seconds per step, and whether
two runs at once or one data-parallel run uses two cores better).

    data = SweepData.from_ids(ids, vocab_size, source="tinyshakespeare.txt")
    record = run_one(spec, data, "out/scaling/runs/" + spec.name)   # None when stopped (it then left a checkpoint)

A run trains with npformer.train.Trainer (its cosine schedule sized to the run's own steps: max_iters =
lr_decay_iters = steps), checkpoints every ``checkpoint_s`` seconds and when stopped, and continues from its
checkpoint when started again, exactly as if it had not stopped. Its loss is measured at the end on the whole
validation split (every non-overlapping window of it), not on a sample of batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..io.atomic import SHARED, atomic_open
from ..models import GPT
from ..train.config import TrainConfig
from ..train.trainer import Trainer, TrainingDiverged
from .grid import RunSpec

VAL_ROWS = 32  # windows per forward pass of the validation loss
SPEC_FILE = "spec.json"


@dataclass
class SweepData:
    """The token ids every run trains and validates on (host NumPy int64), with a fingerprint that a resumed sweep
    checks, so that results measured on other data are never mixed in."""

    train_ids: np.ndarray
    val_ids: np.ndarray
    vocab_size: int
    source: str
    fingerprint: str

    @classmethod
    def from_ids(cls, train_ids, val_ids, vocab_size: int, source: str) -> "SweepData":
        train_ids = np.ascontiguousarray(train_ids, dtype=np.int64)
        val_ids = np.ascontiguousarray(val_ids, dtype=np.int64)
        digest = hashlib.sha256()
        for part in (train_ids, val_ids):
            digest.update(part.tobytes())
        return cls(train_ids, val_ids, int(vocab_size), source, f"{digest.hexdigest()[:16]}")

    def describe(self) -> dict:
        return dict(source=self.source, vocab_size=self.vocab_size, train_tokens=int(self.train_ids.size),
                    val_tokens=int(self.val_ids.size), fingerprint=self.fingerprint)


def full_val_loss(model, val_ids: np.ndarray, block_size: int, rows: int = VAL_ROWS) -> tuple[float, int]:
    """Mean next-token loss (nats) over every non-overlapping window of ``val_ids`` (N,): windows
    x = ids[i T : (i+1) T], y = ids[i T + 1 : (i+1) T + 1]; a last partial window counts too. Returns
    (loss, tokens scored). The model is left in train mode with its caches dropped."""
    n = int(val_ids.shape[0]) - 1
    if n < 1:
        raise ValueError("full_val_loss: the validation split needs at least 2 tokens")
    T = block_size
    starts = np.arange(0, n, T)
    total, counted = 0.0, 0
    model.eval()
    try:
        for length in sorted({min(T, n - int(s)) for s in starts}, reverse=True):
            group = [int(s) for s in starts if min(T, n - int(s)) == length]
            for i in range(0, len(group), rows):
                chunk = group[i:i + rows]
                idx = np.stack([val_ids[s:s + length + 1] for s in chunk])  # (B, length + 1)
                x, y = backend.asarray(idx[:, :-1]), backend.asarray(idx[:, 1:])
                loss = model.loss(x, y)  # mean over B x length tokens
                total += backend.to_float(loss) * idx.shape[0] * length
                counted += idx.shape[0] * length
                model.drop_caches()
    finally:
        model.train()
    return total / counted, counted


def train_config(spec: RunSpec, out_dir: str | None, workers: int = 1, parallel: str = "auto") -> TrainConfig:
    """The run's TrainConfig: a warmup of 5% and a cosine to a tenth of the peak over exactly ``spec.steps``."""
    return TrainConfig(max_iters=spec.steps, lr_decay_iters=spec.steps, batch_size=spec.batch_size,
                       learning_rate=spec.learning_rate, min_lr=spec.learning_rate / 10,
                       warmup_iters=max(1, spec.steps // 20), weight_decay=0.1, grad_clip=1.0,
                       eval_interval=spec.steps, eval_iters=1, log_interval=spec.steps, out_dir=out_dir,
                       seed=spec.seed, quiet=True, workers=workers, parallel=parallel)


def _check_spec_file(run_dir: str, spec: RunSpec) -> None:
    path = os.path.join(run_dir, SPEC_FILE)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                saved = RunSpec.from_dict(json.load(f))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path} is corrupt ({exc}); delete {run_dir} to train that run again") from None
        if saved != spec:
            raise ValueError(f"{run_dir} holds another run ({saved.name}); delete it to train {spec.name}")
    else:
        os.makedirs(run_dir, exist_ok=True)
        with atomic_open(path, "w", encoding="utf-8", permissions=SHARED) as f:
            json.dump(spec.to_dict(), f, indent=1)


def run_one(spec: RunSpec, data: SweepData, run_dir: str | None, workers: int = 1, parallel: str = "auto",
            stop=None, progress=None, checkpoint_s: float = 30.0) -> dict | None:
    """Train ``spec`` on ``data`` and return its record (the spec, N, D, C, C_attn, flops, val_loss on the whole
    validation split, wall_s), or None when ``stop`` (anything with ``is_set()``) was set: the run then saved a
    checkpoint in ``run_dir`` at a step boundary, and a later call continues from it.

    progress(event, spec_name, step, steps): called at the start ("start" or "resumed") and every few steps
    ("step"). wall_s counts the time trained in every session of the run, not the time it waited."""
    if spec.vocab_size != data.vocab_size:
        raise ValueError(f"{spec.name}: vocab_size {spec.vocab_size} does not match the data's {data.vocab_size}")
    start = time.perf_counter()
    model = GPT(spec.model_config())
    cfg = train_config(spec, run_dir, workers, parallel)
    trainer = Trainer(model, cfg, data.train_ids, data.val_ids)
    before = 0.0  # seconds trained in earlier sessions
    try:
        if run_dir is not None:
            _check_spec_file(run_dir, spec)
            if os.path.exists(trainer.checkpoint_path):
                trainer.resume()
                before = float(_read_json(os.path.join(run_dir, "time.json")).get("wall_s", 0.0))
        if progress:
            progress("resumed" if trainer.step else "start", spec.name, trainer.step, spec.steps)
        last_save, last_report = time.perf_counter(), 0.0
        report_every = max(1, spec.steps // 50)
        while trainer.step < spec.steps:
            if stop is not None and stop.is_set():
                _save(trainer, run_dir, before + time.perf_counter() - start)
                return None
            try:
                trainer.train_step(sync=True, record=False)
            except TrainingDiverged as exc:  # name the run: a sweep has many
                raise TrainingDiverged(f"run {spec.name}: {exc}") from None
            now = time.perf_counter()
            if run_dir is not None and now - last_save > checkpoint_s and trainer.step < spec.steps:
                _save(trainer, run_dir, before + now - start)
                last_save = now
            if progress and (trainer.step % report_every == 0 or now - last_report > 2.0):
                progress("step", spec.name, trainer.step, spec.steps)
                last_report = now
        train_loss = trainer.estimate_loss(trainer.train_batches)  # a batch of training loss, for the record
        val_loss, val_tokens = full_val_loss(model, data.val_ids, spec.block_size)
    finally:
        close = getattr(trainer.runner, "close", None)
        if close is not None and trainer.runner is not model:
            close()
    if not math.isfinite(val_loss):
        raise ValueError(f"{spec.name}: the validation loss is {val_loss}; lower its learning rate")
    wall = before + time.perf_counter() - start
    return dict(name=spec.name, **spec.to_dict(), **spec.counts(), val_loss=val_loss, val_tokens=val_tokens,
                train_loss=train_loss, wall_s=round(wall, 3), workers=workers)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(trainer: Trainer, run_dir: str | None, wall_s: float) -> None:
    if run_dir is None:
        return
    trainer.save()
    with atomic_open(os.path.join(run_dir, "time.json"), "w", encoding="utf-8", permissions=SHARED) as f:
        json.dump({"wall_s": wall_s, "step": trainer.step}, f)


def time_steps(spec: RunSpec, data: SweepData, steps: int = 3, workers: int = 1, parallel: str = "auto") -> float:
    """Seconds per training step of ``spec`` (the median of ``steps`` steps, after one untimed step)."""
    model = GPT(spec.model_config())
    trainer = Trainer(model, train_config(spec, None, workers, parallel), data.train_ids, data.val_ids)
    try:
        trainer.train_step(sync=True, record=False)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step(sync=True, record=False)
            times.append(time.perf_counter() - t0)
    finally:
        close = getattr(trainer.runner, "close", None)
        if close is not None and trainer.runner is not model:
            close()
    return float(np.median(times))


def time_validation(spec: RunSpec, data: SweepData, max_windows: int = 4 * VAL_ROWS) -> float:
    """Seconds the final validation pass of ``spec`` takes, from a pass over the first ``max_windows`` windows."""
    model = GPT(spec.model_config())
    n = min(int(data.val_ids.size), max_windows * spec.block_size + 1)
    t0 = time.perf_counter()
    full_val_loss(model, data.val_ids[:n], spec.block_size)
    seconds = time.perf_counter() - t0
    return seconds * max(1.0, (data.val_ids.size - 1) / max(n - 1, 1))
