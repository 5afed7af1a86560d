"""How a batch is split for data parallelism: contiguous, even chunks, and the loss shares that make the chunks'
weighted losses the batch's mean."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer.parallel.split import batch_chunks, chunk_shares, weighted_mean

from ..strategies import seeds


@given(st.integers(1, 50), st.integers(1, 8))
def test_chunks_cover_the_batch_evenly(B, workers):
    chunks = batch_chunks(B, workers)
    assert len(chunks) == min(B, workers)
    assert chunks[0][0] == 0 and chunks[-1][1] == B
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    sizes = [b - a for a, b in chunks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@given(st.integers(1, 12), st.integers(1, 6), st.integers(1, 5), st.floats(0.0, 1.0), seeds())
def test_shares_make_the_weighted_chunk_losses_the_batch_mean(B, T, workers, ignore_fraction, seed):
    """Each chunk's loss is the mean over its own kept targets; weighted by the shares they give the mean over the
    batch's kept targets. With every target ignored, the shares follow the rows."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 5, size=(B, T))
    targets[rng.random((B, T)) < ignore_fraction] = -100
    per_position = rng.standard_normal((B, T))  # a stand-in for each position's loss
    chunks = batch_chunks(B, workers)
    shares = chunk_shares(targets, chunks, ignore_index=-100)
    assert len(shares) == len(chunks) and sum(shares) == pytest.approx(1.0, rel=1e-12)
    kept = targets != -100
    if not kept.any():
        assert shares == pytest.approx([(b - a) / B for a, b in chunks], rel=1e-12)
        return
    losses = [np.asarray(per_position[a:b][kept[a:b]].mean() if kept[a:b].any() else 0.0) for a, b in chunks]
    total = weighted_mean(losses, shares)
    assert total.dtype == np.float64 and total.shape == ()
    assert float(total) == pytest.approx(float(per_position[kept].mean()), rel=1e-12, abs=1e-12)
