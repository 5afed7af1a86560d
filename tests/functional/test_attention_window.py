"""Sliding-window attention (``window=W``) in the reference pair and the flash pair: values against the loop
definition (a causal mask with a band), gradients against finite differences, the flash path visiting only the
key blocks some window reaches (cost T*W, not T^2), and the inputs both refuse."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.functional import attention_inputs
from npformer.functional import flash_attention as flash
from npformer.functional.attention import attention_backward, attention_forward
from npformer.functional.flash_attention import flash_attention_backward, flash_attention_forward
from npformer.gradcheck import check_gradients

from ..helpers import on_backend, reference_attention
from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, attention_cases, normal_array, window_cases


def band(Tq, Tk, window):
    """(Tq, Tk) boolean: key j within the last ``window`` keys of query i (causal alignment: i + Tk - Tq)."""
    rows = np.arange(Tq)[:, None] + (Tk - Tq)
    return np.arange(Tk)[None, :] > rows - window


def window_definition(case, window):
    """The loop reference (helpers.reference_attention) with the window written as one more mask."""
    mask = band(case["q"].shape[2], case["k"].shape[2], window)
    if case["mask"] is not None:
        mask = mask & case["mask"]
    return reference_attention(case["q"], case["k"], case["v"], mask=mask, causal=True, scale=case["scale"])


def assert_close(actual, expected, what=""):
    rtol, atol = TOL[np.dtype(np.float64)]
    np.testing.assert_allclose(backend.to_numpy(actual), backend.to_numpy(expected), rtol=rtol, atol=atol,
                               err_msg=what)


windows = st.integers(1, 7)


@given(case=attention_cases(max_t=8, causal=True), window=windows, block_q=st.integers(1, 4),
       block_k=st.integers(1, 4))
def test_window_matches_definition(xp_backend, case, window, block_q, block_k):
    """Reference and flash (any tiles) both equal the loop definition: causal, masked, and j > i + Tk - Tq - W."""
    want = window_definition(case, window)
    args = on_backend(case)
    out, _ = attention_forward(**args, window=window)
    assert_close(out, want, f"reference, window {window}")
    out, _ = flash_attention_forward(**args, window=window, block_q=block_q, block_k=block_k)
    assert_close(out, want, f"flash, window {window}, blocks {block_q}x{block_k}")


@given(case=attention_cases(max_t=8, causal=True), window=windows, block_q=st.integers(1, 4),
       block_k=st.integers(1, 4))
def test_flash_window_gradients_equal_reference(xp_backend, case, window, block_q, block_k):
    args = on_backend(case)
    dout = backend.asarray(normal_array(5, case["q"].shape))
    _, cache = attention_forward(**args, window=window)
    _, fcache = flash_attention_forward(**args, window=window, block_q=block_q, block_k=block_k)
    for name, a, b in zip("qkv", attention_backward(dout, cache), flash_attention_backward(dout, fcache)):
        assert_close(b, a, f"d{name}, window {window}, blocks {block_q}x{block_k}")


@given(case=window_cases(max_t=9), block_q=st.integers(1, 4), block_k=st.integers(1, 4))
def test_flash_window_any_lengths_equal_reference(xp_backend, case, block_q, block_k):
    """Tq > Tk too: then query blocks exist that no key reaches (an empty range of key blocks in the flash
    forward, of query blocks in its backward); values and gradients still equal the reference's."""
    args = on_backend({k: v for k, v in case.items() if k != "window"})
    window = case["window"]
    dout = backend.asarray(normal_array(7, case["q"].shape))
    out, cache = attention_forward(**args, causal=True, window=window)
    fout, fcache = flash_attention_forward(**args, causal=True, window=window, block_q=block_q, block_k=block_k)
    assert_close(fout, out, f"flash, window {window}, blocks {block_q}x{block_k}")
    for name, a, b in zip("qkv", attention_backward(dout, cache), flash_attention_backward(dout, fcache)):
        assert_close(b, a, f"d{name}, window {window}, blocks {block_q}x{block_k}")


@given(case=attention_cases(max_t=5, max_d=3, causal=True), window=st.integers(1, 4))
def test_window_gradients_match_finite_differences(xp_backend, case, window):
    """Both pairs, in float64 (check_gradients), normwise relative error below GRAD_RTOL."""
    args = on_backend(case)
    report = check_gradients(lambda **a: attention_forward(**a, window=window), attention_backward, args,
                             wrt=("q", "k", "v"), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"reference, window {window}, q{case['q'].shape} k{case['k'].shape}\n{report}"
    report = check_gradients(lambda **a: flash_attention_forward(**a, window=window, block_q=2, block_k=2),
                             flash_attention_backward, args, wrt=("q", "k", "v"), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"flash, window {window}, q{case['q'].shape} k{case['k'].shape}\n{report}"


@given(case=attention_cases(max_t=6, causal=True))
def test_window_at_least_tk_is_plain_causal(xp_backend, case):
    args = on_backend(case)
    Tk = case["k"].shape[2]
    plain, _ = attention_forward(**args)
    for window in (Tk, Tk + 3):
        out, _ = attention_forward(**args, window=window)
        assert_close(out, plain, f"window {window} >= Tk {Tk}")


def test_window_one_sees_only_itself(xp_backend):
    """W = 1: each query attends to its own key alone, so the output is that key's value (one kv head)."""
    q, k, v = (backend.asarray(normal_array(s, (2, 3, 5, 4))) for s in (1, 2, 3))
    out, _ = attention_forward(q, k, v, causal=True, window=1)
    assert_close(out, v)


def test_a_hidden_score_does_not_move_the_output(xp_backend):
    """Changing a key outside every query's window changes nothing; a key inside some window does."""
    q, k, v = (normal_array(s, (1, 1, 6, 3)) for s in (1, 2, 3))
    out, _ = attention_forward(*(backend.asarray(a) for a in (q, k, v)), causal=True, window=2)
    k2, v2 = k.copy(), v.copy()
    k2[..., 0, :] += 5.0  # key 0 is seen by queries 0 and 1 only (W = 2)
    v2[..., 0, :] -= 5.0
    out2, _ = attention_forward(*(backend.asarray(a) for a in (q, k2, v2)), causal=True, window=2)
    diff = np.abs(backend.to_numpy(out2 - out)).max(axis=-1)[0, 0]  # (T,)
    assert np.all(diff[:2] > 1e-3) and np.all(diff[2:] == 0.0), diff


# ---------------------------------------------------------------------------------------------------------------
# the flash path skips the blocks outside every window
# ---------------------------------------------------------------------------------------------------------------
def visited_blocks(monkeypatch, T, window, block, D=2):
    """Run flash forward + backward at (1, 1, T, D) and return the (q0, q1, k0, k1) tiles each pass computed."""
    seen = {"forward": [], "backward": []}
    phase = ["forward"]
    real = flash._block_hidden

    def counting(xp, spec, mask5, q0, q1, k0, k1):
        seen[phase[0]].append((q0, q1, k0, k1))
        return real(xp, spec, mask5, q0, q1, k0, k1)

    monkeypatch.setattr(flash, "_block_hidden", counting)
    q, k, v = (backend.asarray(normal_array(s, (1, 1, T, D))) for s in (1, 2, 3))
    out, cache = flash_attention_forward(q, k, v, causal=True, window=window, block_q=block, block_k=block)
    phase[0] = "backward"
    flash_attention_backward(out, cache)
    return seen


@pytest.mark.parametrize("T", [32, 64, 128])
def test_flash_visits_only_blocks_inside_a_window(xp_backend, monkeypatch, T):
    """With W = block = 8, each query block meets at most 2 key blocks (its own and the previous one): the tiles
    computed grow as T / block * 2, linearly in T, where full causal attention would compute T^2 / (2 block^2)."""
    W = block = 8
    seen = visited_blocks(monkeypatch, T, W, block)
    allowed = band(T, T, W) & (np.arange(T)[None, :] <= np.arange(T)[:, None])
    for phase, tiles in seen.items():
        for q0, q1, k0, k1 in tiles:  # every computed tile has at least one score some query may use
            assert allowed[q0:q1, k0:k1].any(), (phase, (q0, q1, k0, k1))
        n_blocks = T // block
        assert len(tiles) == 2 * n_blocks - 1, (phase, len(tiles))  # diagonal tiles + the one before each


def test_window_keys_and_queries_are_inverse(xp_backend):
    """window_keys(q0:q1) covers exactly the keys those queries may see; window_queries(k0:k1) exactly the
    queries that may see one of those keys (checked against the band for shifted and unshifted layouts)."""
    for Tq, Tk, W in ((7, 7, 3), (3, 9, 2), (9, 3, 4), (5, 5, 1), (4, 10, 20)):
        spec = attention_inputs.AttentionSpec(1, 1, 1, 1, Tq, Tk, 1, 1.0, None, True, W)
        allowed = band(Tq, Tk, W) & (np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + Tk - Tq)
        for a in range(Tq):
            for b in range(a + 1, Tq + 1):
                k0, k1 = attention_inputs.window_keys(spec, a, b)
                cols = np.flatnonzero(allowed[a:b].any(axis=0))
                assert (cols.size == 0 and k1 <= k0) or (k0, k1) == (cols[0], cols[-1] + 1), (Tq, Tk, W, a, b)
        for a in range(Tk):
            for b in range(a + 1, Tk + 1):
                q0, q1 = attention_inputs.window_queries(spec, a, b)
                rows = np.flatnonzero(allowed[:, a:b].any(axis=1))
                assert (rows.size == 0 and q1 <= q0) or (q0, q1) == (rows[0], rows[-1] + 1), (Tq, Tk, W, a, b)


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [attention_forward, flash_attention_forward])
@pytest.mark.parametrize("window, causal, message", [
    (2, False, "needs causal=True"), (0, True, "positive integer"), (-1, True, "positive integer"),
    (True, True, "positive integer"), (2.0, True, "positive integer"), ("3", True, "positive integer"),
])
def test_bad_windows_are_refused(xp_backend, op, window, causal, message):
    q = backend.asarray(normal_array(0, (1, 1, 3, 2)))
    with pytest.raises(ValueError, match=message):
        op(q, q, q, causal=causal, window=window)


def test_numpy_integer_window_is_accepted(xp_backend):
    q = backend.asarray(normal_array(0, (1, 1, 4, 2)))
    a, _ = attention_forward(q, q, q, causal=True, window=np.int64(2))
    b, _ = attention_forward(q, q, q, causal=True, window=2)
    assert_close(a, b)
