"""The shared training loop: exact resume, the divergence guard, the loss history."""

import csv
import math
import os

import numpy as np
import pytest

from npformer.models import GPT, GPTConfig
from npformer.train.checkpoint import load_checkpoint
from npformer.train.trainer import TrainConfig, Trainer, TrainingDiverged

DATA = (np.arange(4000) * 5) % 13  # a pattern a model can pick up in a few steps


def _trainer(out_dir, max_iters, dropout=0.1, lr_decay_iters=8):
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=dropout, seed=3))
    cfg = TrainConfig(max_iters=max_iters, batch_size=4, learning_rate=1e-2, warmup_iters=2,
                      lr_decay_iters=lr_decay_iters,
                      eval_interval=3, eval_iters=2, log_interval=1, out_dir=str(out_dir), seed=5, quiet=True)
    return Trainer(model, cfg, DATA[:3600], DATA[3600:], meta={"note": "test"})


def _losses(history):
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in history]


def test_killed_run_resumes_exactly(tmp_path):
    """Killed at step 5, resumed from the step-3 checkpoint: the same losses and parameters, bit for bit."""
    straight = _trainer(tmp_path / "a", 8)
    straight.run()
    killed = _trainer(tmp_path / "b", 8)
    real_step = killed.train_step

    def step_then_die(*args, **kwargs):
        if killed.step == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    killed.train_step = step_then_die
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    resumed = _trainer(tmp_path / "b", 8)
    resumed.resume()
    assert resumed.step == 3
    resumed.run()
    assert _losses(resumed.history) == _losses(straight.history)  # dropout masks and batches included
    a = load_checkpoint(str(tmp_path / "a" / "ckpt.npz"))
    b = load_checkpoint(str(tmp_path / "b" / "ckpt.npz"))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)


def test_extended_run_continues_the_same_training(tmp_path):
    """A finished 4-step run extended to 8 steps trains exactly like an 8-step run (its extra final evaluation
    draws validation batches, so only the training losses are compared). The schedule decays over 8 steps in all
    three: lr_decay_iters longer than a run is kept as asked (TrainConfig.fitted fits only the warmup)."""
    straight = _trainer(tmp_path / "a", 8)
    straight.run()
    _trainer(tmp_path / "b", 4).run()
    extended = _trainer(tmp_path / "b", 8)
    extended.resume()
    extended.run()

    def train_losses(history):
        return [(r["step"], r["train_loss"]) for r in history if r["val_loss"] == ""]

    assert train_losses(extended.history) == train_losses(straight.history)


def test_divergence_stops_with_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, 8, dropout=0.0)
    real_loss = trainer.model.loss

    def loss_that_blows_up(x, y):
        loss = real_loss(x, y)
        return loss * float("nan") if trainer.step >= 4 and trainer.model.training else loss

    trainer.model.loss = loss_that_blows_up
    with pytest.raises(TrainingDiverged, match=r"step 4: the training loss is nan.*checkpoint.*step 3.*intact"):
        trainer.run()
    ckpt = load_checkpoint(str(tmp_path / "ckpt.npz"))
    assert ckpt.meta["step"] == 3 and ckpt.meta["note"] == "test"
    assert all(np.isfinite(v).all() for v in ckpt.params.values())


def test_history_csv_and_learning(tmp_path):
    trainer = _trainer(tmp_path, 8, dropout=0.0)
    trainer.run()
    with open(os.path.join(tmp_path, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"step", "train_loss", "val_loss", "lr", "tokens_per_s"}
    vals = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(vals) == 4  # steps 0, 3, 6 and the end
    assert vals[-1] < vals[0] and math.isfinite(trainer.final_val_loss)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    _trainer(tmp_path, 3, dropout=0.0).run()
    other = Trainer(GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=32)),
                    TrainConfig(max_iters=3, batch_size=4, warmup_iters=1, out_dir=str(tmp_path), quiet=True),
                    DATA[:3600], DATA[3600:])
    with pytest.raises(ValueError, match="shape"):
        other.resume()


def test_train_config_errors():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0).validate()
    TrainConfig(batch_size=1).validate()  # the boundary is allowed


def test_resume_names_what_a_checkpoint_lacks(tmp_path):
    from npformer.train.checkpoint import CheckpointError, save_checkpoint

    trainer = _trainer(tmp_path, 3, dropout=0.0)
    save_checkpoint(str(tmp_path / "ckpt.npz"), params=trainer.model.state_dict(), meta={"note": "weights only"})
    with pytest.raises(CheckpointError, match="no step, train_sampler, val_sampler, optimizer state"):
        trainer.resume()
