"""DataParallel on threads: replicas share weights but not gradients or dropout masks; its errors; and the
per-thread budgets the replicas run under (BLAS threads, the blockwise thread count)."""

import threading

import numpy as np
import pytest

from npformer.kernels import cpu
from npformer.kernels.cpu.blas import blas_threads, get_blas_threads, set_blas_threads
from npformer.models import GPT, GPTConfig
from npformer.nn import Dropout
from npformer.parallel import DataParallel
from npformer.train.trainer import TrainConfig


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
    assert drops[0] and all(not np.array_equal(a._cache.mask, b._cache.mask) for a, b in zip(*drops))
    # an optimizer step on the model's arrays is what the replica computes with next
    for p in model.parameters():
        p.data += 1.0
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), replica.parameters()))


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
    with cpu.single_threaded():
        assert cpu.num_threads() == 1
        other = threading.Thread(target=lambda: seen.setdefault("other", cpu.num_threads()))
        other.start()
        other.join()
    assert seen["other"] == cpu.num_threads() == 3  # another thread keeps its own budget
