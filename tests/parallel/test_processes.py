"""ProcessDataParallel: workers share the weights through shared memory, report failures, refuse work after a
command was not seen through, survive a fork of their owner, and compute bit for bit what threads compute."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer.models import GPT, GPTConfig
from npformer.parallel import data_parallel
from npformer.parallel.processes import ProcessDataParallel, processes_available
from npformer.train.trainer import TrainConfig, Trainer

from ..helpers import lm_batch, randomize_parameters
from ..strategies import gpt_configs, seeds

pytestmark = pytest.mark.skipif(not processes_available(), reason="this platform cannot fork worker processes")


def test_processes_share_weights_and_report_failures():
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8, seed=2)
    model = GPT(cfg)
    dp = ProcessDataParallel(model, 2)
    try:
        x = np.arange(24).reshape(4, 6) % 11
        for p in model.parameters():  # as an optimizer step would: in place, in the main process only
            p.data *= 1.5
        assert float(dp.loss(x, x)) == pytest.approx(float(model.loss(x, x)), rel=1e-6)
        dp.drop_caches()
        bad = x.copy()
        bad[3, 0] = 11  # in the worker's chunk: its error comes back with the worker's traceback
        with pytest.raises(ValueError, match="worker 1 failed.*out of range"):
            dp.loss(bad, x)
        with pytest.raises(ValueError, match="out of range"):  # in this process's chunk
            dp.loss(x, np.where(x == 0, 11, x))
        # nothing left over in the pipes: the next call still answers right
        assert float(dp.loss(x, x)) == pytest.approx(float(model.loss(x, x)), rel=1e-6)
        # a parameter rebound to a new array of the same shape: copied back into the shared buffer
        model.wte.weight.data = model.wte.weight.data * 0.5
        assert float(dp.loss(x, x)) == pytest.approx(float(model.loss(x, x)), rel=1e-6)
        assert np.shares_memory(model.wte.weight.data, dp._data)
        model.astype(np.float64)  # a new dtype cannot live in the float32 buffer
        with pytest.raises(RuntimeError, match="now float64"):
            dp.loss(x, x)
        with pytest.raises(ValueError, match="workers must be >= 1"):
            ProcessDataParallel(model, 0)
        with pytest.raises(ValueError, match="mode must be one of"):
            data_parallel(model, 2, "fibers")
    finally:
        dp.close()
    assert not any(proc.is_alive() for proc in dp._procs)


@given(gpt_configs(max_block=5), st.integers(2, 5), seeds())
def test_threads_and_processes_agree_bit_for_bit(cfg, B, seed):
    """The same chunks, the same per-chunk arithmetic, the same order of reduction: identical float32 results."""
    rng = np.random.default_rng(seed)
    x, y = lm_batch(rng, cfg.vocab_size, B, cfg.block_size, 0.3)
    results = []
    for mode in ("threads", "processes"):
        model = randomize_parameters(GPT(cfg), seed)
        dp = data_parallel(model, 2, mode)
        try:
            loss = dp.loss(x, y)
            dp.backward()
        finally:
            if hasattr(dp, "close"):
                dp.close()
        results.append((np.asarray(loss), {n: p.grad.copy() for n, p in model.named_parameters()}))
    (loss_t, grads_t), (loss_p, grads_p) = results
    assert loss_t.dtype == np.float32 and loss_t.tobytes() == loss_p.tobytes()
    for name in grads_t:
        np.testing.assert_array_equal(grads_t[name], grads_p[name], err_msg=name)


def test_trainer_processes_train_as_threads_do():
    """Threads share the model's arrays outright; processes see them through shared memory. Equal histories over
    several optimizer steps show the workers compute with the weights each step left (not stale copies)."""
    data = (np.arange(4000) * 7) % 13
    histories = []
    for mode in ("threads", "processes"):
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, seed=1))
        cfg = TrainConfig(max_iters=5, batch_size=4, learning_rate=3e-2, warmup_iters=1, eval_interval=5,
                          eval_iters=2, log_interval=1, seed=2, quiet=True, workers=2, parallel=mode)
        trainer = Trainer(model, cfg, data[:3600], data[3600:])
        trainer.run()
        histories.append([r["train_loss"] for r in trainer.history])
        if hasattr(trainer.runner, "close"):
            trainer.runner.close()
    assert len(set(histories[0])) > 1 and histories[0] == histories[1]


def test_processes_refuse_work_after_a_command_was_not_seen_through(monkeypatch):
    """A worker that dies, or a Ctrl-C while the workers are busy, leaves replies unread: every later command is
    refused (a stale reply must never be taken for a fresh one)."""
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8))
    x = np.arange(24).reshape(4, 6) % 11
    dp = ProcessDataParallel(model, 2)
    try:
        dp._procs[0].kill()
        dp._procs[0].join()
        with pytest.raises(RuntimeError, match="(died|gone)"):
            dp.loss(x, x)
        with pytest.raises(RuntimeError, match="not seen through"):
            dp.loss(x, x)
    finally:
        dp.close()

    dp = ProcessDataParallel(model, 2)
    try:
        def interrupted(k):
            raise KeyboardInterrupt
        monkeypatch.setattr(dp, "_receive", interrupted)
        with pytest.raises(KeyboardInterrupt):
            dp.loss(x, x)
        monkeypatch.undo()
        with pytest.raises(RuntimeError, match="not seen through"):
            dp.drop_caches()
    finally:
        dp.close()


def test_a_fork_of_the_owner_does_not_stop_its_workers():
    import multiprocessing.util
    import os

    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8))
    x = np.arange(24).reshape(4, 6) % 11
    dp = ProcessDataParallel(model, 2)
    try:
        pid = os.fork()
        if pid == 0:  # the child runs what a normal exit runs (our finalizer, multiprocessing's exit handler)
            try:
                dp._finalizer()
                multiprocessing.util._exit_function()
            finally:
                os._exit(0)  # never back into pytest in the child
        os.waitpid(pid, 0)
        assert dp._procs[0].is_alive()
        assert float(dp.loss(x, x)) == pytest.approx(float(model.loss(x, x)), rel=1e-6)
    finally:
        dp.close()
