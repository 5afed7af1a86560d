"""DataParallel (model replicas on threads), BLAS thread control and the per-thread blockwise budget."""

import dataclasses
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npformer import backend
from npformer.blas import blas_threads, get_blas_threads, set_blas_threads
from npformer.gradcheck import check_model
from npformer.models import GPT, GPTConfig
from npformer.nn import Dropout
from npformer.parallel import DataParallel, _chunks, data_parallel
from npformer.parallel_processes import ProcessDataParallel, processes_available
from npformer.trainer import TrainConfig, Trainer

from .strategies import GRAD_ATOL, GRAD_RTOL, gpt_configs, seeds

MODES = ["threads", pytest.param("processes", marks=pytest.mark.skipif(
    not processes_available(), reason="this platform cannot fork worker processes"))]


def _batch(rng, cfg, B, T, ignore_fraction):
    x = rng.integers(0, cfg.vocab_size, size=(B, T))
    y = rng.integers(0, cfg.vocab_size, size=(B, T))
    y[rng.random((B, T)) < ignore_fraction] = -100
    if 0.0 < ignore_fraction < 1.0:
        y[0, 1:] = -100  # uneven kept counts per chunk (the first keeps one target): shares must follow them
        y[0, 0] = 0
    return x, y


@pytest.mark.parametrize("mode", MODES)
@given(gpt_configs(max_block=5), st.integers(2, 5), st.integers(1, 3), st.sampled_from([0.5, 0.0, 1.0]), seeds())
def test_parallel_equals_one_replica(mode, cfg, B, workers, ignore_fraction, seed):
    """Loss and every gradient equal the model's own (float64, 1e-12), whatever the split, the ignored targets
    (an all-ignored chunk included) and the gradients already there (they are added to, not overwritten)."""
    cfg = dataclasses.replace(cfg, dropout=0.0)
    rng = np.random.default_rng(seed)
    with backend.float64():
        model = GPT(cfg)
        x, y = _batch(rng, cfg, B, cfg.block_size, ignore_fraction)
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
        model = GPT(cfg)
        for p in model.parameters():  # not the zero biases of init: with them a dropped-out row lands on ReLU's kink
            p.data[...] = rng.standard_normal(p.shape) * 0.5
        dp = data_parallel(model, 2, mode)
        x, y = _batch(rng, cfg, B, cfg.block_size, 0.2)

        def loss_fn():
            for m in model.modules():  # the same masks every call: replicas' streams derive from the model's
                if isinstance(m, Dropout):
                    m.seeds = np.random.default_rng(m.seed)
            return dp.loss(x, y)

        try:
            report = check_model(loss_fn, dp.backward, model.named_parameters(), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        finally:
            if hasattr(dp, "close"):
                dp.close()
    assert report.passed, report


def test_replicas_share_weights_not_gradients_or_masks():
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8, dropout=0.3, seed=4)
    model = GPT(cfg)
    dp = DataParallel(model, 2)
    replica = dp.replicas[1]
    for p, q in zip(model.parameters(), replica.parameters()):
        assert q.data is p.data or np.shares_memory(q.data, p.data)
        assert not np.shares_memory(q.grad, p.grad)
    x = np.zeros((2, 6), dtype=np.int64)  # two identical rows: with shared masks the chunks would be twins
    dp.loss(x, x)
    drops = [[m for m in r.modules() if isinstance(m, Dropout) and m.p > 0] for r in dp.replicas]
    assert drops[0] and all(a._last_seed != b._last_seed for a, b in zip(*drops))
    # an optimizer step on the model's arrays is what the replica computes with next
    for p in model.parameters():
        p.data += 1.0
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), replica.parameters()))


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


def test_parallel_errors():
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="workers must be >= 1"):
        DataParallel(model, 0)
    dp = DataParallel(model, 2)
    with pytest.raises(ValueError, match="same shape"):
        dp.loss(np.zeros((2, 6), dtype=np.int64), np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="batch is empty"):
        dp.loss(np.zeros((0, 6), dtype=np.int64), np.zeros((0, 6), dtype=np.int64))
    with pytest.raises(RuntimeError, match="call loss"):
        dp.backward()
    model.wte.weight.data = np.zeros((12, 8), dtype=np.float32)  # replaced by an array of another shape
    with pytest.raises(RuntimeError, match="changed shape"):
        dp.loss(np.zeros((2, 6), dtype=np.int64), np.zeros((2, 6), dtype=np.int64))
    with pytest.raises(ValueError, match="workers must be >= 1"):
        TrainConfig(workers=0).validate()


@given(st.integers(1, 50), st.integers(1, 8))
def test_chunks_cover_the_batch_evenly(B, workers):
    chunks = _chunks(B, workers)
    assert len(chunks) == min(B, workers)
    assert chunks[0][0] == 0 and chunks[-1][1] == B
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    sizes = [b - a for a, b in chunks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("mode", MODES)
def test_trainer_with_workers_resumes_exactly(tmp_path, capsys, mode):
    """Two workers are deterministic, so a run killed after its step-3 checkpoint continues bit for bit; a resume
    with another number of workers says so."""
    data = (np.arange(4000) * 5) % 13

    def trainer(out_dir, max_iters, workers):
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1, seed=3))
        cfg = TrainConfig(max_iters=max_iters, batch_size=4, learning_rate=1e-2, warmup_iters=2, lr_decay_iters=8,
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


def test_blas_thread_count_is_set_and_restored():
    original = get_blas_threads()
    if original is None:
        pytest.skip("no BLAS whose thread count can be controlled is loaded here")
    try:
        set_blas_threads(2)  # so that the checks below mean something on a one-core machine too
        with blas_threads(1) as controlled:
            assert controlled and get_blas_threads() == 1
            a = np.ones((64, 64), dtype=np.float32)
            np.testing.assert_allclose(a @ a, 64.0)  # products still right with one thread
        assert get_blas_threads() == 2
        with pytest.raises(ValueError, match="n must be >= 1"):
            set_blas_threads(0)
    finally:
        set_blas_threads(original)


def test_single_threaded_is_per_thread(monkeypatch):
    monkeypatch.setenv("NPFORMER_NUM_THREADS", "3")
    seen = {}
    with backend.single_threaded():
        assert backend.num_threads() == 1
        other = threading.Thread(target=lambda: seen.setdefault("other", backend.num_threads()))
        other.start()
        other.join()
    assert seen["other"] == backend.num_threads() == 3  # another thread keeps its own budget


@pytest.mark.skipif(not processes_available(), reason="this platform cannot fork worker processes")
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


@pytest.mark.skipif(not processes_available(), reason="this platform cannot fork worker processes")
@given(gpt_configs(max_block=5), st.integers(2, 5), seeds())
def test_threads_and_processes_agree_bit_for_bit(cfg, B, seed):
    """The same chunks, the same per-chunk arithmetic, the same order of reduction: identical float32 results."""
    rng = np.random.default_rng(seed)
    x, y = _batch(rng, cfg, B, cfg.block_size, 0.3)
    results = []
    for mode in ("threads", "processes"):
        model = GPT(cfg)
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


@pytest.mark.skipif(not processes_available(), reason="this platform cannot fork worker processes")
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


@pytest.mark.skipif(not processes_available(), reason="this platform cannot fork worker processes")
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


@pytest.mark.skipif(not processes_available(), reason="this platform cannot fork worker processes")
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
