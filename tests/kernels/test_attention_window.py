"""The fast tier's sliding-window attention (row blocks that meet only the keys their windows cover, P kept as a
band) equals the reference tier's, forward and backward, in float64 and float32, with the multi-block and the
multi-thread paths really run (counted), and keeps memory linear in T."""

import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.kernels import attention as attn
from npformer.kernels import cpu

from ..strategies import normal_array, window_cases
from .equality import assert_equal


@pytest.fixture
def numpy_backend():
    """The threads and the band layout are NumPy-side matters: these tests run there in both CI passes."""
    with backend.use_backend("numpy"):
        yield


class Counter:
    """Wraps the attention module's ``blockwise``: how many blocks ran, on which threads."""

    def __init__(self, real):
        self.real, self.lock, self.blocks, self.threads = real, threading.Lock(), 0, set()

    def __call__(self, kernel, *arrays, **kwargs):
        def counted(*views):
            with self.lock:
                self.blocks += 1
                self.threads.add(threading.get_ident())
            time.sleep(2e-4)  # a piece long enough that the helper threads get to take some (cores are shared)
            kernel(*views)

        self.real(counted, *arrays, **kwargs)


def run_both(case, dtype):
    """(fast, reference) results: p (the band spread back to (B, H, Tq, Tk)), out, dq, dk, dv."""
    arrays = {n: backend.asarray(case[n].astype(dtype)) for n in "qkv"}
    mask = None if case["mask"] is None else backend.asarray(case["mask"])
    kw = dict(mask=mask, causal=True, scale=case["scale"], window=case["window"])
    dout = backend.asarray(normal_array(7, case["q"].shape).astype(dtype))
    out, cache = attn.attention_forward(**arrays, **kw)
    fast = (attn.band_to_full(cache), out, *attn.attention_backward(dout, cache))
    ref_out, ref_cache = F.attention_forward(**arrays, **kw)
    ref = (ref_cache.softmax.y, ref_out, *F.attention_backward(dout, ref_cache))
    return fast, ref, cache


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=window_cases(), block_rows=st.integers(1, 4))
def test_window_equals_reference(xp_backend, monkeypatch, dtype, case, block_rows):
    """Any row blocks (tiny, so every case runs through several, including rows that see no key)."""
    monkeypatch.setattr(attn, "BLOCK_ROWS", block_rows)
    monkeypatch.setattr(attn, "BLOCK_ROWS_SINGLE_THREAD", block_rows)
    fast, ref, cache = run_both(case, dtype)
    Tq = case["q"].shape[2]
    assert len(cache.blocks) == -(-Tq // block_rows)  # the blocks really were that small
    for name, got, want in zip(("p", "out", "dq", "dk", "dv"), fast, ref):
        assert_equal(f"{name}: q{case['q'].shape} k{case['k'].shape} W={case['window']} rows={block_rows}",
                     got, want, dtype)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_window_multi_block_multi_thread_paths_run(numpy_backend, monkeypatch, threads, dtype):
    """Tiny blockwise pieces (8 elements) on 1 or 3 threads, 4-row blocks: the softmax and its backward run as
    many pieces, on every thread asked for, and the results still equal the reference."""
    counter = Counter(cpu.blockwise)
    monkeypatch.setattr(attn, "blockwise", counter)
    monkeypatch.setattr(cpu.threads, "BLOCK_ELEMENTS", 8)
    monkeypatch.setattr(cpu.threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setenv("NPFORMER_NUM_THREADS", str(threads))
    monkeypatch.setattr(attn, "BLOCK_ROWS", 4)
    monkeypatch.setattr(attn, "BLOCK_ROWS_SINGLE_THREAD", 4)
    case = dict(q=normal_array(1, (2, 4, 24, 8)), k=normal_array(2, (2, 2, 24, 8)), v=normal_array(3, (2, 2, 24, 8)),
                mask=None, scale=None, window=5)
    fast, ref, cache = run_both(case, dtype)
    for name, got, want in zip(("p", "out", "dq", "dk", "dv"), fast, ref):
        assert_equal(name, got, want, dtype)
    assert len(cache.blocks) == 6
    assert counter.blocks > 2 * len(cache.blocks)  # more pieces than row blocks: the blockwise split ran
    assert (len(counter.threads) > 1) == (threads > 1), counter.threads


def test_band_is_narrow_and_blocks_cover_the_window(numpy_backend):
    """P is stored (B, H, T, L) with L <= block rows + W - 1, far below T; each block's keys are exactly what its
    rows' windows reach."""
    T, W = 512, 16
    q = backend.asarray(normal_array(0, (1, 2, T, 4)))
    _, cache = attn.attention_forward(q, q, q, causal=True, window=W)
    rows = cache.blocks[0][1] - cache.blocks[0][0]
    assert cache.p.shape == (1, 2, T, rows + W - 1) and cache.p.shape[-1] < T // 4
    for r0, r1, k0, k1 in cache.blocks:
        assert (k0, k1) == (max(0, r0 - W + 1), r1)


def test_window_rows_are_capped_near_w(numpy_backend, monkeypatch):
    """Blocks of 128 rows with W = 4 would compute 131 keys per row for 4 used: rows are capped at max(W, 32)."""
    monkeypatch.setattr(attn, "BLOCK_ROWS", 128)
    monkeypatch.setattr(attn, "BLOCK_ROWS_SINGLE_THREAD", 128)
    spec = attn.AttentionSpec(1, 1, 1, 1, 256, 256, 1, 1.0, None, True, 4)
    assert all(r1 - r0 == 32 for r0, r1, _, _ in attn.window_blocks(spec))
    spec = spec._replace(window=100)
    assert all(r1 - r0 == 100 for r0, r1, _, _ in attn.window_blocks(spec)[:-1])


def test_no_window_cache_is_unchanged(numpy_backend):
    """Without a window the fast cache is the full (B, H, Tq, Tk) P and carries no band blocks."""
    q = backend.asarray(normal_array(0, (1, 1, 6, 2)))
    _, cache = attn.attention_forward(q, q, q, causal=True)
    assert cache.blocks is None and cache.p.shape == (1, 1, 6, 6) and attn.band_to_full(cache) is cache.p


def test_fast_tier_refuses_bad_windows(numpy_backend):
    q = backend.asarray(normal_array(0, (1, 1, 3, 2)))
    with pytest.raises(ValueError, match="needs causal=True"):
        attn.attention_forward(q, q, q, window=2)
    with pytest.raises(ValueError, match="positive integer"):
        attn.attention_forward(q, q, q, causal=True, window=0)
