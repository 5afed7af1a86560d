"""The train/validation split is contiguous, and the batch sampler is seeded, shifted, on the active backend and
resumable."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.data import BatchSampler, train_val_split

from ..strategies import seeds


# ---------------------------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------------------------
@given(n=st.integers(4, 500), frac=st.floats(0.05, 0.95))
def test_train_val_split_is_contiguous(n, frac):
    ids = np.arange(n, dtype=np.int64)
    n_val = round(n * frac)
    if n_val < 2 or n - n_val < 2:
        with pytest.raises(ValueError, match="train_val_split"):
            train_val_split(ids, frac)
        return
    train, val = train_val_split(ids, frac)
    assert len(val) == n_val
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)


def test_train_val_split_errors():
    ids = np.arange(100)
    train, val = train_val_split(ids)
    assert (len(train), len(val)) == (90, 10)
    with pytest.raises(ValueError, match="at least 11"):
        train_val_split(ids, 0.1, min_length=11)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(ids, bad)


# ---------------------------------------------------------------------------------------------------------------
# sampler
# ---------------------------------------------------------------------------------------------------------------
@given(seed=seeds(), n=st.integers(2, 60), block=st.integers(1, 8), batch=st.integers(1, 5))
def test_batches_are_shifted_windows(seed, n, block, batch):
    ids = np.random.default_rng(seed).integers(0, 1000, size=n).astype(np.uint16)  # memmaps are often uint16
    if n < block + 1:
        with pytest.raises(ValueError, match="too short"):
            BatchSampler(ids, block, batch, seed)
        return
    sampler = BatchSampler(ids, block, batch, seed)
    x, y = (backend.to_numpy(a) for a in sampler.next())  # on the active backend: brought home to compare
    assert x.shape == y.shape == (batch, block)
    assert x.dtype == np.int64 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    for row_x, row_y in zip(x, y):  # each row is a window of the data
        starts = [i for i in range(n - block) if np.array_equal(ids[i:i + block], row_x)]
        assert any(np.array_equal(ids[i + 1:i + 1 + block], row_y) for i in starts)


def test_batches_live_on_the_active_backend(xp_backend):
    x, y = BatchSampler(np.arange(50), 5, 3, seed=0)()
    assert backend.array_module(x) is xp_backend and backend.array_module(y) is xp_backend
    assert x.dtype == np.int64


def test_same_seed_same_batches_different_seed_different():
    ids = np.arange(10_000)
    a, b, c = (BatchSampler(ids, 8, 4, seed=s) for s in (1, 1, 2))
    for _ in range(3):
        xa, xb, xc = (backend.to_numpy(s.next()[0]) for s in (a, b, c))
        np.testing.assert_array_equal(xa, xb)
        assert not np.array_equal(xa, xc)


@given(seed=seeds())
def test_resume_draws_the_same_batches(seed):
    ids = np.arange(5_000)
    uninterrupted = BatchSampler(ids, 6, 3, seed)
    for _ in range(3):
        uninterrupted.next()
    state = json.loads(json.dumps(uninterrupted.state_dict()))  # JSON-able, as in a checkpoint
    expected = [tuple(backend.to_numpy(a) for a in uninterrupted.next()) for _ in range(2)]
    resumed = BatchSampler(ids, 6, 3, seed=12345)  # the seed comes back from the state
    resumed.load_state_dict(state)
    assert resumed.batches_drawn == 3 and resumed.seed == seed
    for x_exp, y_exp in expected:
        x, y = (backend.to_numpy(a) for a in resumed.next())
        np.testing.assert_array_equal(x, x_exp)
        np.testing.assert_array_equal(y, y_exp)


def test_sampler_validation():
    with pytest.raises(ValueError, match="block_size"):
        BatchSampler(np.arange(10), 0, 1)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(np.arange(10), 2, 0)
    with pytest.raises(TypeError, match="integers"):
        BatchSampler(np.zeros(10), 2, 1)
    with pytest.raises(ValueError, match="1-D"):
        BatchSampler(np.zeros((2, 10), dtype=np.int64), 2, 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        BatchSampler(np.arange(10), 2, 1, vocab_size=5)
    sampler = BatchSampler(np.arange(10), 2, 1)
    other = BatchSampler(np.arange(11), 3, 1).state_dict()
    with pytest.raises(ValueError) as info:
        sampler.load_state_dict(other)
    assert "block_size is 3" in str(info.value) and "n_tokens is 11" in str(info.value)
