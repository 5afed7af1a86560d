"""Gradient flow recorded by the trainer: at the logged steps only, per layer, the gradient norms adding up to the
step's global norm before clipping and the update ratios the optimizer step really made; saved in the run's
files and checkpoint, kept across a resume, and brought home in the logged step's one transfer."""

import csv
import importlib.util
import math

import numpy as np
import pytest

from npformer import backend
from npformer.inspect.gradient_flow import layer_of
from npformer.models import GPT, GPTConfig
from npformer.train.checkpoint import load_checkpoint
from npformer.train.trainer import TrainConfig, Trainer

DATA = (np.arange(4000) * 5) % 13


def make_trainer(out_dir=None, max_iters=7, log_interval=3, **model):
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, seed=3, **model)
    train = TrainConfig(max_iters=max_iters, batch_size=4, learning_rate=1e-2, warmup_iters=1, eval_interval=100,
                        eval_iters=1, log_interval=log_interval, out_dir=None if out_dir is None else str(out_dir),
                        quiet=True, grad_clip=0.05)
    return Trainer(GPT(cfg), train, DATA[:3600], DATA[3600:])


def test_layers():
    assert [layer_of(n) for n in ("wte.weight", "blocks.3.attn.qkv.weight", "encoder.blocks.0.ffn.fc.bias",
                                  "norm_f.bias", "lm_head", "tgt_embed.tok.weight")] == \
        ["wte", "blocks.3", "encoder.blocks.0", "norm_f", "lm_head", "tgt_embed.tok"]


def test_a_recorded_step_measures_gradients_before_clipping_and_the_real_update():
    trainer = make_trainer(tie_embeddings=False)
    model = trainer.model
    before = {name: backend.to_numpy(p.data).copy() for name, p in model.named_parameters()}
    loss, norm = trainer.train_step(sync=True)
    rows = trainer.gradient_flow
    assert [r["layer"] for r in rows] == ["wte", "wpe", "blocks.0", "blocks.1", "norm_f", "lm_head"]
    assert {r["step"] for r in rows} == {1}
    # the layers' norms add up (in squares) to the global norm clip_grad_norm saw, far above the clip
    assert math.sqrt(sum(r["grad_norm"] ** 2 for r in rows)) == pytest.approx(norm, rel=1e-4) and norm > 0.05
    for r in rows:
        names = [n for n in before if layer_of(n) == r["layer"]]
        after = {n: backend.to_numpy(p.data) for n, p in model.named_parameters() if n in names}
        update = math.sqrt(sum(((after[n] - before[n]).astype(np.float64) ** 2).sum() for n in names))
        weight = math.sqrt(sum((after[n].astype(np.float64) ** 2).sum() for n in names))
        assert r["update_ratio"] == pytest.approx(update / weight, rel=1e-3)
        assert r["param_norm"] == pytest.approx(weight, rel=1e-4)
    trainer.train_step(sync=True, record=False)
    assert len(trainer.gradient_flow) == len(rows)


def test_only_logged_steps_are_recorded_and_saved(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=7, log_interval=3)
    trainer.run()
    steps = sorted({r["step"] for r in trainer.gradient_flow})
    assert steps == [3, 6, 7]  # the log interval and the last step, as the history's rows
    assert steps == [r["step"] for r in trainer.history if r["val_loss"] == ""]
    with open(tmp_path / "gradient_flow.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "layer", "grad_norm", "update_ratio", "param_norm"]
    assert len(rows) == len(trainer.gradient_flow) == 3 * 5
    assert float(rows[0]["grad_norm"]) == pytest.approx(trainer.gradient_flow[0]["grad_norm"])
    assert load_checkpoint(str(tmp_path / "ckpt.npz")).meta["gradient_flow"] == trainer.gradient_flow
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "gradient_flow.png").stat().st_size > 2000


def test_resume_keeps_the_records(tmp_path):
    make_trainer(tmp_path, max_iters=3).run()
    resumed = make_trainer(tmp_path, max_iters=6)
    resumed.resume()
    resumed.run()
    assert sorted({r["step"] for r in resumed.gradient_flow}) == [3, 6]


def test_a_recorded_step_is_one_transfer_on_a_device(xp_backend):
    cupy = xp_backend
    if not hasattr(cupy, "sync_count"):
        pytest.skip("syncs are counted by the stand-in only")
    trainer = make_trainer()
    before = cupy.sync_count()
    trainer.train_step(sync=False)
    assert cupy.sync_count() == before and trainer.gradient_flow == []
    loss, norm = trainer.train_step(sync=True)
    assert cupy.sync_count() == before + 1 and math.isfinite(loss)
    assert len(trainer.gradient_flow) == 5 and all(math.isfinite(r["update_ratio"]) for r in trainer.gradient_flow)
