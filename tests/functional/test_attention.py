"""Scaled dot-product attention, the reference pair (npformer.functional.attention): values against a loop
reference, gradients against finite differences, what the cache holds, and the properties attention must always
have (causality, grouped heads, masks, no NaN, dtypes)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npformer import backend
from npformer.functional.attention import attention_backward, attention_forward
from npformer.gradcheck import check_gradients

from ..helpers import ATTENTION_BAD_INPUTS, allowed_matrix, on_backend, reference_attention
from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, attention_cases, normal_array


def assert_close(actual, expected, dtype=np.float64, what=""):
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(backend.to_numpy(actual), backend.to_numpy(expected), rtol=rtol, atol=atol,
                               err_msg=what)


# ---------------------------------------------------------------------------------------------------------------
# values and gradients
# ---------------------------------------------------------------------------------------------------------------
@given(attention_cases())
def test_forward_matches_loop_reference(xp_backend, case):
    out, _ = attention_forward(**on_backend(case))
    assert out.shape == case["q"].shape
    assert_close(out, reference_attention(**case), what=str({k: np.shape(v) for k, v in case.items()}))


@given(attention_cases(max_t=4, max_d=3))
def test_gradients_match_finite_differences(xp_backend, case):
    report = check_gradients(attention_forward, attention_backward, on_backend(case), wrt=("q", "k", "v"),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"shapes q{case['q'].shape} k{case['k'].shape} causal={case['causal']}\n{report}"


def test_inputs_are_not_modified(xp_backend):
    case = on_backend(dict(q=normal_array(0, (1, 2, 3, 4)), k=normal_array(1, (1, 1, 5, 4)),
                           v=normal_array(2, (1, 1, 5, 4))))
    before = {n: backend.to_numpy(a).copy() for n, a in case.items()}
    out, cache = attention_forward(**case, causal=True)
    attention_backward(backend.asarray(normal_array(3, out.shape)), cache)
    for n, a in case.items():
        np.testing.assert_array_equal(backend.to_numpy(a), before[n])


@given(attention_cases())
def test_cache_holds_repeated_kv_heads_and_the_probabilities(xp_backend, case):
    """The reference cache: q, k and v repeated to one head per query head, and P (softmax.y) with zeros where a
    score is not allowed and rows summing to one (zero for a row with nothing to attend to), out = P V."""
    out, cache = attention_forward(**on_backend(case))
    q, k, v = case["q"], case["k"], case["v"]
    B, H, Tq, D = q.shape
    Tk, G = k.shape[2], H // k.shape[1]
    np.testing.assert_array_equal(backend.to_numpy(cache.q), q)
    np.testing.assert_array_equal(backend.to_numpy(cache.k), np.repeat(k, G, axis=1))
    np.testing.assert_array_equal(backend.to_numpy(cache.v), np.repeat(v, G, axis=1))
    assert (cache.spec.B, cache.spec.H, cache.spec.G, cache.spec.Tq, cache.spec.Tk) == (B, H, G, Tq, Tk)
    p = backend.to_numpy(cache.softmax.y)
    allowed = allowed_matrix(B, H, Tq, Tk, case["mask"], case["causal"])
    assert p.shape == (B, H, Tq, Tk) and np.all(p[~allowed] == 0.0) and np.all(p >= 0.0)
    assert_close(p.sum(axis=-1), allowed.any(axis=-1).astype(np.float64))
    assert_close(out, p @ np.repeat(v, G, axis=1))


# ---------------------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------------------
@given(attention_cases(causal=True, mask=False), st.data())
def test_causal_output_ignores_the_future(xp_backend, case, data):
    q, k, v = case["q"], case["k"], case["v"]
    Tq, Tk = q.shape[2], k.shape[2]
    t = data.draw(st.integers(0, Tq - 1), label="t")
    shift = Tk - Tq  # query t sees keys up to t + shift
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    q2[:, :, t + 1:] += 10.0
    k2[:, :, t + shift + 1:] = -k2[:, :, t + shift + 1:] + 5.0
    v2[:, :, t + shift + 1:] += 7.0
    out1, _ = attention_forward(*map(backend.asarray, (q, k, v)), causal=True, scale=case["scale"])
    out2, _ = attention_forward(*map(backend.asarray, (q2, k2, v2)), causal=True, scale=case["scale"])
    np.testing.assert_array_equal(backend.to_numpy(out1)[:, :, :t + 1], backend.to_numpy(out2)[:, :, :t + 1])
    if t + shift + 1 < Tk:  # the change is visible to later queries (the test can see a leak)
        assert not np.allclose(backend.to_numpy(out1)[:, :, -1], backend.to_numpy(out2)[:, :, -1])


@given(attention_cases(causal=True, equal_t=True), st.data())
def test_causal_decoding_equals_last_rows_of_full_sequence(xp_backend, case, data):
    """The last Tq queries against all T keys (a cache) give the last Tq rows of causal self-attention."""
    q, k, v = (backend.asarray(case[n]) for n in "qkv")
    T = q.shape[2]
    Tq = data.draw(st.integers(1, T), label="Tq")
    full, _ = attention_forward(q, k, v, causal=True, scale=case["scale"])
    last, _ = attention_forward(q[:, :, T - Tq:], k, v, causal=True, scale=case["scale"])
    assert_close(last, backend.to_numpy(full)[:, :, T - Tq:])


@given(attention_cases(max_t=4, max_d=3))
def test_gqa_equals_mha_with_repeated_kv_heads(xp_backend, case):
    q, k, v = case["q"], case["k"], case["v"]
    G = q.shape[1] // k.shape[1]
    opts = dict(mask=None if case["mask"] is None else backend.asarray(case["mask"]), causal=case["causal"],
                scale=case["scale"])
    out, cache = attention_forward(*map(backend.asarray, (q, k, v)), **opts)
    k_rep, v_rep = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)  # query head h reads kv head h // G
    out_rep, cache_rep = attention_forward(*map(backend.asarray, (q, k_rep, v_rep)), **opts)
    assert_close(out, out_rep)
    dout = backend.asarray(normal_array(7, out.shape))
    dq, dk, dv = attention_backward(dout, cache)
    dq_rep, dk_rep, dv_rep = (backend.to_numpy(g) for g in attention_backward(dout, cache_rep))
    B, Hkv, Tk, D = k.shape
    assert dk.shape == k.shape and dv.shape == v.shape
    assert_close(dq, dq_rep)
    assert_close(dk, dk_rep.reshape(B, Hkv, G, Tk, D).sum(axis=2))  # a shared head gets its group's sum
    assert_close(dv, dv_rep.reshape(B, Hkv, G, Tk, D).sum(axis=2))


@given(attention_cases(max_t=4, max_d=3), st.data())
def test_mha_heads_are_independent(xp_backend, case, data):
    """Hkv = H is plain multi-head attention: each head equals attention computed on that head alone."""
    q, k, v = case["q"], case["k"], case["v"]
    H = q.shape[1]
    k, v = np.repeat(k, H // k.shape[1], axis=1), np.repeat(v, H // v.shape[1], axis=1)
    out, _ = attention_forward(*map(backend.asarray, (q, k, v)), causal=case["causal"], scale=case["scale"])
    h = data.draw(st.integers(0, H - 1), label="head")
    one, _ = attention_forward(*(backend.asarray(a[:, h:h + 1]) for a in (q, k, v)), causal=case["causal"],
                               scale=case["scale"])
    assert_close(backend.to_numpy(out)[:, h:h + 1], one)


@given(attention_cases(mask=False), st.data())
def test_padding_keys_get_zero_weight(xp_backend, case, data):
    q, k, v = case["q"], case["k"], case["v"]
    B, Tk = q.shape[0], k.shape[2]
    lengths = np.array(data.draw(st.lists(st.integers(0, Tk), min_size=B, max_size=B), label="lengths"))
    pad = np.arange(Tk)[None, :] >= lengths[:, None]  # (B, Tk), True at padding keys
    mask = backend.asarray((~pad).reshape(B, 1, 1, Tk))
    k2, v2 = k.copy(), v.copy()
    k2.transpose(0, 2, 1, 3)[pad] = 100.0  # padded keys' contents must not matter
    v2.transpose(0, 2, 1, 3)[pad] = -50.0
    out, cache = attention_forward(*map(backend.asarray, (q, k, v)), mask=mask, causal=case["causal"])
    out2, _ = attention_forward(*map(backend.asarray, (q, k2, v2)), mask=mask, causal=case["causal"])
    np.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(out2))
    p = backend.to_numpy(cache.softmax.y)  # P (B, H, Tq, Tk)
    assert np.all(p.transpose(0, 3, 1, 2)[pad] == 0.0)
    _, dk, dv = attention_backward(backend.asarray(normal_array(1, out.shape)), cache)
    assert np.all(backend.to_numpy(dk).transpose(0, 2, 1, 3)[pad] == 0.0)
    assert np.all(backend.to_numpy(dv).transpose(0, 2, 1, 3)[pad] == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=attention_cases(mask=False), data=st.data())
def test_fully_masked_rows_give_zeros_and_zero_grads(xp_backend, dtype, case, data):
    q, k, v = (case[n].astype(dtype) for n in "qkv")
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    empty = np.array(data.draw(st.lists(st.booleans(), min_size=Tq, max_size=Tq), label="empty rows"))
    mask = np.broadcast_to(np.asarray(data.draw(hnp.arrays(np.bool_, (Tq, Tk)), label="pattern")), (B, H, Tq, Tk))
    mask = mask & ~empty[:, None]
    out, cache = attention_forward(*map(backend.asarray, (q, k, v)), mask=backend.asarray(mask),
                                   causal=case["causal"])
    dq, dk, dv = attention_backward(backend.asarray(normal_array(2, out.shape, dtype)), cache)
    out, dq, dk, dv = map(backend.to_numpy, (out, dq, dk, dv))
    for name, a in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert np.all(np.isfinite(a)), name
    rows = ~allowed_matrix(B, H, Tq, Tk, mask, case["causal"]).any(axis=-1)  # (B, H, Tq)
    assert np.all(out[rows] == 0.0) and np.all(dq[rows] == 0.0)
    if rows.all():
        assert np.all(dk == 0.0) and np.all(dv == 0.0)


@pytest.mark.parametrize("magnitude", [1e3, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=attention_cases(max_d=4))
def test_huge_scores_stay_finite(xp_backend, magnitude, dtype, case):
    """Scores of magnitude ~1e3 to 1e4: no overflow, and each output row is still a convex combination of v."""
    D = case["q"].shape[-1]
    q = (np.sign(case["q"]) * math.sqrt(magnitude)).astype(dtype)
    k = (np.sign(case["k"]) * math.sqrt(magnitude)).astype(dtype)
    v = case["v"].astype(dtype)
    out, cache = attention_forward(*map(backend.asarray, (q, k, v)), mask=on_backend(case)["mask"],
                                   causal=case["causal"], scale=1.0 / D)
    grads = attention_backward(backend.asarray(normal_array(3, out.shape, dtype)), cache)
    for a in (out, *grads):
        assert np.all(np.isfinite(backend.to_numpy(a)))
    out = backend.to_numpy(out)
    lo = np.minimum(v.min(axis=2, keepdims=True), 0.0)  # 0: rows with nothing to attend to are zero
    hi = np.maximum(v.max(axis=2, keepdims=True), 0.0)
    G = q.shape[1] // v.shape[1]
    slack = 1e-5 if dtype == np.float32 else 1e-12
    assert np.all(out >= np.repeat(lo, G, axis=1) - slack) and np.all(out <= np.repeat(hi, G, axis=1) + slack)


@given(attention_cases())
def test_float32_stays_float32(xp_backend, case):
    c32 = {n: a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
           for n, a in case.items()}
    out, cache = attention_forward(**on_backend(c32))
    dout = normal_array(4, out.shape)
    grads = attention_backward(backend.asarray(dout, dtype=np.float32), cache)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert all(a.dtype == np.float32 for a in (cache.q, cache.k, cache.v, cache.softmax.y))
    out64, cache64 = attention_forward(**on_backend(case))
    grads64 = attention_backward(backend.asarray(dout), cache64)
    assert out64.dtype == np.float64 and all(g.dtype == np.float64 for g in grads64)
    assert_close(out, out64, np.float32)
    for g, g64 in zip(grads, grads64):
        assert_close(g, g64, np.float32)


# ---------------------------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inputs, error, message", ATTENTION_BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(xp_backend, inputs, error, message):
    with pytest.raises(error, match=r"^attention: " + message):
        attention_forward(**on_backend(inputs))


# ---------------------------------------------------------------------------------------------------------------
# optional oracle: PyTorch in float64
# ---------------------------------------------------------------------------------------------------------------
@given(attention_cases(max_t=5, max_d=4))
def test_matches_torch_sdpa(xp_backend, case):
    torch = pytest.importorskip("torch")
    q, k, v, mask = case["q"], case["k"], case["v"], case["mask"]
    B, H, Tq, D = q.shape
    Tk, G = k.shape[2], H // k.shape[1]
    allowed = allowed_matrix(B, H, Tq, Tk, mask, case["causal"])
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    # torch gives NaN for rows with nothing to attend to; compute those with any key allowed, zero them after
    rows = torch.tensor(allowed.any(axis=-1, keepdims=True))
    t_mask = torch.tensor(allowed) | ~rows
    t_out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk.repeat_interleave(G, dim=1), tv.repeat_interleave(G, dim=1), attn_mask=t_mask,
        scale=case["scale"]) * rows
    dout = normal_array(5, (B, H, Tq, D))
    t_out.backward(torch.tensor(dout))

    out, cache = attention_forward(**on_backend(case))
    grads = attention_backward(backend.asarray(dout), cache)
    assert_close(out, t_out.detach().numpy(), what="out")
    for name, g, t in zip("qkv", grads, (tq, tk, tv)):
        assert_close(g, t.grad.numpy(), what=f"d{name}")
