"""Data parallelism, in both modes (threads and processes): the model's own loss and gradients, gradients against
finite differences, model modes and state loads followed, failed calls leave nothing behind, training resumes
exactly. (What only one mode does: test_threads.py, test_processes.py; the split: test_split.py.)"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.models import GPT, GPTConfig
from npformer.parallel import DataParallel, data_parallel
from npformer.parallel.processes import ProcessDataParallel, processes_available
from npformer.train.trainer import TrainConfig, Trainer

from ..helpers import lm_batch, randomize_parameters, reseed_dropout
from ..strategies import GRAD_ATOL, GRAD_RTOL, gpt_configs, seeds

MODES = ["threads", pytest.param("processes", marks=pytest.mark.skipif(
    not processes_available(), reason="this platform cannot fork worker processes"))]


@pytest.mark.parametrize("mode", MODES)
@given(gpt_configs(max_block=5), st.integers(2, 5), st.integers(1, 3), st.sampled_from([0.5, 0.0, 1.0]), seeds())
def test_parallel_equals_one_replica(mode, cfg, B, workers, ignore_fraction, seed):
    """Loss and every gradient equal the model's own (float64, 1e-12), whatever the split, the ignored targets
    (an all-ignored chunk included) and the gradients already there (they are added to, not overwritten)."""
    cfg = dataclasses.replace(cfg, dropout=0.0)
    rng = np.random.default_rng(seed)
    with backend.float64():
        model = randomize_parameters(GPT(cfg), seed)
        x, y = lm_batch(rng, cfg.vocab_size, B, cfg.block_size, ignore_fraction)
        before = {n: rng.standard_normal(p.shape) for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad[...] = before[n]
        loss_ref = float(model.loss(x, y))
        model.backward(0.7)
        ref = {n: p.grad.copy() for n, p in model.named_parameters()}

        for n, p in model.named_parameters():
            p.grad[...] = before[n]
        dp = data_parallel(model, workers, mode)
        try:
            loss = dp.loss(x, y)
            dp.backward(0.7)
        finally:
            if hasattr(dp, "close"):
                dp.close()
    assert loss.dtype == np.float64
    np.testing.assert_allclose(float(loss), loss_ref, rtol=1e-12, atol=1e-12)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, ref[n], rtol=1e-12, atol=1e-12, err_msg=n)


# a third of the profile's examples: each takes ~1 s, as every finite-difference forward hands work to a thread
@settings(max_examples=max(4, settings().max_examples // 3))
@pytest.mark.parametrize("mode", MODES)
@given(gpt_configs(max_vocab=5, max_block=3), st.integers(2, 3), seeds())
def test_parallel_gradients_match_finite_differences(mode, cfg, B, seed):
    """The parallel path's own gradients (dropout included) against central differences of its own loss."""
    rng = np.random.default_rng(seed)
    with backend.float64():
        # every parameter its own draw (not the zero biases of init: with them a dropped-out row lands on ReLU's
        # kink, and not norms all equal: a replica reading the wrong one would pass)
        model = randomize_parameters(GPT(cfg), seed)
        dp = data_parallel(model, 2, mode)
        x, y = lm_batch(rng, cfg.vocab_size, B, cfg.block_size, 0.2)

        def loss_fn():
            reseed_dropout(model)  # the same masks every call: replicas' streams derive from the model's
            return dp.loss(x, y)

        try:
            report = check_model(loss_fn, dp.backward, model.named_parameters(), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        finally:
            if hasattr(dp, "close"):
                dp.close()
    assert report.passed, report


@pytest.mark.parametrize("mode", MODES)
def test_parallel_follows_model_modes_and_state_loads(mode):
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8, dropout=0.5, seed=1)
    model = GPT(cfg)
    dp = data_parallel(model, 2, mode)
    try:
        x = np.arange(24).reshape(4, 6) % 11
        training_loss = float(dp.loss(x, x))
        model.eval()
        eval_loss = float(model.loss(x, x))
        assert training_loss != pytest.approx(eval_loss, rel=1e-3)  # dropout at 0.5 does change the loss
        assert float(dp.loss(x, x)) == pytest.approx(eval_loss, rel=1e-6)  # no dropout anywhere in eval mode
        other = GPT(dataclasses.replace(cfg, seed=9))
        model.load_state_dict(other.state_dict())
        assert float(dp.loss(x, x)) == pytest.approx(float(other.eval().loss(x, x)), rel=1e-6)
        dp.drop_caches()
        with pytest.raises(RuntimeError, match="call loss"):
            dp.backward()
    finally:
        if hasattr(dp, "close"):
            dp.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_loss_leaves_nothing_for_backward(mode):
    """An error in one chunk's forward (here a worker's) is raised, and a backward after it refuses to run on
    what an earlier call left behind; the runner then works on."""
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8))
    dp = data_parallel(model, 2, mode)
    try:
        x = np.arange(24).reshape(4, 6) % 11
        dp.loss(x, x)  # a good call: its pending state must not survive the failed one
        bad = x.copy()
        bad[3, 0] = 11  # out of range, in the second chunk: a ValueError whichever process or thread has it
        with pytest.raises(ValueError, match="out of range"):
            dp.loss(bad, x)
        with pytest.raises(RuntimeError, match="call loss"):
            dp.backward()
        dp.loss(x, x)
        with pytest.raises(ValueError, match="same shape"):  # refused before any work: nothing pending either
            dp.loss(x, x[:, :5])
        with pytest.raises(RuntimeError, match="call loss"):
            dp.backward()
        model.zero_grad()
        assert float(dp.loss(x, x)) == pytest.approx(float(model.loss(x, x)), rel=1e-6)
        dp.backward()
    finally:
        if hasattr(dp, "close"):
            dp.close()


@pytest.mark.parametrize("mode", MODES)
def test_trainer_with_workers_resumes_exactly(tmp_path, capsys, mode):
    """Two workers are deterministic, so a run killed after its step-3 checkpoint continues bit for bit; a resume
    with another number of workers says so."""
    data = (np.arange(4000) * 5) % 13

    def trainer(out_dir, max_iters, workers):
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1, seed=3))
        cfg = TrainConfig(max_iters=max_iters, batch_size=4, learning_rate=1e-2, warmup_iters=2, lr_decay_iters=6,
                          eval_interval=3, eval_iters=2, log_interval=1, out_dir=str(out_dir), seed=5, quiet=True,
                          workers=workers, parallel=mode)
        return Trainer(model, cfg, data[:3600], data[3600:])

    full = trainer(tmp_path / "full", 6, 2)
    full.run()
    killed = trainer(tmp_path / "killed", 4, 2)
    killed.run()
    resumed = trainer(tmp_path / "killed", 6, 2)
    resumed.resume(str(tmp_path / "killed" / "ckpt.npz"))
    resumed.run()
    assert [r["train_loss"] for r in full.history][-2:] == [r["train_loss"] for r in resumed.history][-2:]
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert full.runner.workers == 2
    other = trainer(tmp_path / "killed", 6, 1)
    other.cfg.quiet = False
    other.resume(str(tmp_path / "killed" / "ckpt.npz"))
    assert "trained with 2 data-parallel worker(s), this run uses 1" in capsys.readouterr().out
    assert isinstance(full.runner, ProcessDataParallel if mode == "processes" else DataParallel)
    for t in (full, killed, resumed):
        if hasattr(t.runner, "close"):
            t.runner.close()
