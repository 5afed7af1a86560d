"""The fast tier's attention (causal row blocks that skip unseen keys, grouped heads without copies, in-place
blockwise softmax) equals the reference tier's, forward and backward, in float64 and float32.

The drawn sizes are tiny, so the row block is drawn tiny too (1 to 4 rows): every case runs through several
blocks, including blocks whose rows see no key (causal with Tq > Tk).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npformer import backend
from npformer import functional as F
from npformer.kernels import attention as attn

from ..strategies import normal_array, seeds
from .equality import assert_equal


@st.composite
def cases(draw, max_t=9, max_d=4):
    """Host arrays q (B,H,Tq,D), k, v (B,Hkv,Tk,D) in float64, a mask or None, causal, scale; Tq > Tk allowed."""
    B, Hkv = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H = Hkv * draw(st.integers(1, 3))
    Tq, Tk, D = draw(st.integers(1, max_t)), draw(st.integers(1, max_t)), draw(st.integers(1, max_d))
    seed = draw(seeds())
    kind = draw(st.sampled_from(["none", "pattern", "padding"]))
    mask = None
    if kind == "pattern":
        shape = tuple(n if draw(st.booleans()) else 1 for n in (B, H, Tq, Tk))
        mask = draw(hnp.arrays(np.bool_, shape))
    elif kind == "padding":
        lengths = np.array(draw(st.lists(st.integers(0, Tk), min_size=B, max_size=B)))
        mask = (np.arange(Tk)[None, :] < lengths[:, None]).reshape(B, 1, 1, Tk)
    return dict(q=normal_array(seed, (B, H, Tq, D)), k=normal_array(seed + 1, (B, Hkv, Tk, D)),
                v=normal_array(seed + 2, (B, Hkv, Tk, D)), mask=mask, causal=draw(st.booleans()),
                scale=draw(st.one_of(st.none(), st.floats(0.1, 2.0))))


def reference(q, k, v, dout, mask, causal, scale):
    """p, out, dq, dk, dv from the reference tier (npformer.functional.attention)."""
    out, cache = F.attention_forward(q, k, v, mask=mask, causal=causal, scale=scale)
    dq, dk, dv = F.attention_backward(dout, cache)
    return cache.softmax.y, out, dq, dk, dv


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=cases(), block_rows=st.integers(1, 4), backward_rows=st.integers(1, 4))
def test_row_blocks_equal_reference(xp_backend, monkeypatch, dtype, case, block_rows, backward_rows):
    """Any row blocks, and different ones in the backward pass than in the forward (a forward in a single-threaded
    worker and a backward elsewhere): P is stored whole, so the blocks need not match."""
    monkeypatch.setattr(attn, "BLOCK_ROWS", block_rows)
    monkeypatch.setattr(attn, "BLOCK_ROWS_SINGLE_THREAD", block_rows)
    dout = normal_array(7, case["q"].shape)
    B, H, Tq, _ = case["q"].shape
    # the layer's layout: q, k, v as transposed views of one (B, T, heads, D) buffer, not contiguous arrays
    views = {n: backend.asarray(np.ascontiguousarray(case[n].astype(dtype).transpose(0, 2, 1, 3))).transpose(
        0, 2, 1, 3) for n in "qkv"}
    mask = None if case["mask"] is None else backend.asarray(case["mask"])
    out, cache = attn.attention_forward(**views, mask=mask, causal=case["causal"], scale=case["scale"])
    monkeypatch.setattr(attn, "BLOCK_ROWS", backward_rows)
    monkeypatch.setattr(attn, "BLOCK_ROWS_SINGLE_THREAD", backward_rows)
    dq, dk, dv = attn.attention_backward(backend.asarray(dout.astype(dtype)), cache)
    # the reference on the same arrays, in the same dtype
    p_ref, *expected = reference(views["q"], views["k"], views["v"], backend.asarray(dout.astype(dtype)), mask,
                                 case["causal"], case["scale"])
    for name, got, want in zip(("p", "out", "dq", "dk", "dv"), (cache.p, out, dq, dk, dv), (p_ref, *expected)):
        assert_equal(f"{name}: q{case['q'].shape} k{case['k'].shape} causal={case['causal']} block_rows="
                     f"{block_rows}, {backward_rows}", got, want, dtype)


def test_row_blocks_cover_rows_and_keys():
    """Rows are cut in order; each block's keys end where its last row's causal window ends (clipped to Tk)."""
    for Tq, Tk in ((7, 7), (3, 9), (9, 3), (1, 1)):
        spec = attn.AttentionSpec(1, 1, 1, 1, Tq, Tk, 1, 1.0, None, True)
        blocks = attn.row_blocks(spec, block_rows=2)
        assert [r0 for r0, _, _ in blocks] == list(range(0, Tq, 2)) and blocks[-1][1] == Tq
        assert all(e == min(Tk, max(0, r1 + Tk - Tq)) for _, r1, e in blocks) and blocks[-1][2] == Tk
    assert attn.row_blocks(attn.AttentionSpec(1, 1, 1, 1, 9, 9, 1, 1.0, None, False), block_rows=2) == [(0, 9, 9)]
