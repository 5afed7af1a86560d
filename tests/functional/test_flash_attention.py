"""Tiled (FlashAttention-style) attention equals the reference attention pair: values, gradients, errors, dtypes,
no NaN."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.functional.attention import attention_backward, attention_forward
from npformer.functional.flash_attention import flash_attention_backward, flash_attention_forward
from npformer.gradcheck import check_gradients

from ..helpers import ATTENTION_BAD_INPUTS, on_backend
from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, attention_cases, normal_array


def block_sizes(max_t):
    """Block sizes from 1 to past the sequence length: dividing T or not, one block or many."""
    return st.integers(1, max_t + 2)


def both_paths(case, block_q, block_k, dout_seed=11):
    """Run plain and flash forward + backward on the same case; return (out, dq, dk, dv) for each, on the host."""
    args = on_backend(case)
    out, cache = attention_forward(**args)
    fout, fcache = flash_attention_forward(**args, block_q=block_q, block_k=block_k)
    dout = backend.asarray(normal_array(dout_seed, out.shape, out.dtype))
    plain = (out, *attention_backward(dout, cache))
    flash = (fout, *flash_attention_backward(dout, fcache))
    return [backend.to_numpy(a) for a in plain], [backend.to_numpy(a) for a in flash], fcache


@given(attention_cases(max_t=9), block_sizes(9), block_sizes(9))
def test_flash_equals_plain_path(xp_backend, case, block_q, block_k):
    plain, flash, _ = both_paths(case, block_q, block_k)
    for name, p, f in zip(("out", "dq", "dk", "dv"), plain, flash):
        assert f.shape == p.shape, name
        assert np.all(np.isfinite(f)), name
        np.testing.assert_allclose(f, p, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{name}: q{case['q'].shape} k{case['k'].shape} causal={case['causal']} "
                                           f"mask={None if case['mask'] is None else case['mask'].shape} "
                                           f"blocks=({block_q}, {block_k})")


@given(attention_cases(max_t=4, max_d=3), block_sizes(4), block_sizes(4))
def test_flash_gradients_match_finite_differences(xp_backend, case, block_q, block_k):
    inputs = dict(on_backend(case), block_q=block_q, block_k=block_k)
    report = check_gradients(flash_attention_forward, flash_attention_backward, inputs, wrt=("q", "k", "v"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"q{case['q'].shape} k{case['k'].shape} blocks=({block_q}, {block_k})\n{report}"


@given(attention_cases(max_t=9), block_sizes(9), block_sizes(9))
def test_flash_float32_stays_float32(xp_backend, case, block_q, block_k):
    c32 = {n: a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
           for n, a in case.items()}
    plain, flash, cache = both_paths(c32, block_q, block_k)
    assert all(a.dtype == np.float32 for a in flash) and cache.lse.dtype == np.float32
    rtol, atol = TOL[np.dtype(np.float32)]
    for name, p, f in zip(("out", "dq", "dk", "dv"), plain, flash):
        np.testing.assert_allclose(f, p, rtol=rtol, atol=atol, err_msg=name)


@given(attention_cases(max_t=9), block_sizes(9), block_sizes(9))
def test_flash_cache_has_no_score_matrix(xp_backend, case, block_q, block_k):
    """Memory: the cache holds q, k, v, out and the (B, H, Tq) log-sum-exp, nothing of size Tq * Tk."""
    _, _, cache = both_paths(case, block_q, block_k)
    B, H, Tq, D = case["q"].shape
    assert cache.lse.shape == (B, H, Tq)
    assert cache.q.shape == cache.out.shape == (B, H, Tq, D)
    assert cache.k.shape == cache.v.shape == case["k"].shape  # the kv heads as given, not repeated G times
    arrays = [a for a in cache if hasattr(a, "shape") and hasattr(a, "size")]  # every array field of the cache
    assert sum(a.size for a in arrays) == 2 * B * H * Tq * D + 2 * case["k"].size + B * H * Tq


@pytest.mark.parametrize("magnitude", [1e3, 1e4])
@given(case=attention_cases(max_t=9, max_d=4), block_q=block_sizes(9), block_k=block_sizes(9))
def test_flash_huge_scores_and_empty_rows_stay_finite(xp_backend, magnitude, case, block_q, block_k):
    """Scores ~1e3..1e4 and rows with nothing to attend to: finite, and empty rows are exactly zero."""
    D = case["q"].shape[-1]
    case = dict(case, q=np.sign(case["q"]) * math.sqrt(magnitude), k=np.sign(case["k"]) * math.sqrt(magnitude),
                scale=1.0 / D)
    plain, flash, _ = both_paths({n: a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                                  else a for n, a in case.items()}, block_q, block_k)
    for name, f in zip(("out", "dq", "dk", "dv"), flash):
        assert np.all(np.isfinite(f)), name
    empty = np.all(plain[0] == 0.0, axis=-1) & np.all(plain[1] == 0.0, axis=-1)  # plain path's empty rows
    assert np.all(flash[0][empty] == 0.0) and np.all(flash[1][empty] == 0.0)


def test_flash_fully_masked_everything_is_zero(xp_backend):
    q, k, v = (backend.asarray(normal_array(s, (2, 4, 5, 3))) for s in range(3))
    mask = backend.asarray(np.zeros((2, 1, 1, 5), dtype=bool))
    out, cache = flash_attention_forward(q, k, v, mask=mask, block_q=2, block_k=3)
    grads = flash_attention_backward(backend.asarray(normal_array(3, out.shape)), cache)
    for a in (out, *grads):
        a = backend.to_numpy(a)
        assert np.all(a == 0.0)  # zeros, not NaN


@pytest.mark.parametrize("inputs, error, message", ATTENTION_BAD_INPUTS)
def test_flash_bad_inputs_raise_the_same_errors(xp_backend, inputs, error, message):
    with pytest.raises(error, match=r"^flash_attention: " + message):
        flash_attention_forward(**on_backend(inputs))


@pytest.mark.parametrize("block", [0, -3, 2.5, None, True])
def test_flash_bad_block_sizes_raise(block):
    q = np.zeros((1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"^flash_attention: block_q must be a positive integer"):
        flash_attention_forward(q, q, q, block_q=block)
    with pytest.raises(ValueError, match=r"^flash_attention: block_k must be a positive integer"):
        flash_attention_forward(q, q, q, block_k=block)


def test_flash_skips_blocks_hidden_by_the_causal_rule(monkeypatch):
    """With causal=True the work is a triangle: fewer score blocks than the full grid, same result."""
    import npformer.functional.flash_attention as fa

    calls = []
    real = fa._block_hidden

    def counting(*args):
        hidden = real(*args)
        calls.append(not isinstance(hidden, str))
        return hidden

    monkeypatch.setattr(fa, "_block_hidden", counting)
    q, k, v = (normal_array(s, (1, 2, 16, 4)) for s in range(3))
    out, cache = flash_attention_forward(q, k, v, causal=True, block_q=4, block_k=4)
    computed_fwd = sum(calls)
    flash_attention_backward(normal_array(3, out.shape), cache)
    computed_bwd = sum(calls) - computed_fwd
    assert computed_fwd == computed_bwd == 10  # 4 + 3 + 2 + 1 of the 16 blocks
    np.testing.assert_allclose(out, attention_forward(q, k, v, causal=True)[0], rtol=1e-12, atol=1e-12)
