"""Per-head summaries on heads whose behaviour is known exactly: previous-token, first-token and uniform heads."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer.inspect import format_head_table, head_summary


def previous_token_head(T):
    P = np.zeros((T, T))
    P[0, 0] = 1.0
    P[np.arange(1, T), np.arange(T - 1)] = 1.0
    return P


def first_token_head(T):
    P = np.zeros((T, T))
    P[:, 0] = 1.0
    return P


def uniform_causal_head(T):
    allowed = np.tril(np.ones((T, T)))
    return allowed / allowed.sum(-1, keepdims=True)


@given(T=st.integers(3, 12), B=st.integers(1, 3))
def test_known_heads(T, B):
    heads = np.stack([previous_token_head(T), first_token_head(T), uniform_causal_head(T)])  # (H, T, T)
    maps = np.broadcast_to(heads, (2, B, 3, T, T))  # two identical layers
    s = head_summary(maps)
    queries = np.arange(1, T)  # query 0 has no token before it: left out
    np.testing.assert_allclose(s.entropy[0], [0.0, 0.0, np.log(queries + 1).mean()], atol=1e-12)
    np.testing.assert_allclose(s.distance[0], [1.0, queries.mean(), (queries / 2).mean()])
    np.testing.assert_allclose(s.previous_token[0], [1.0, 1 / (T - 1), (1 / (queries + 1)).mean()])
    np.testing.assert_allclose(s.first_token[0], [1 / (T - 1), 1.0, (1 / (queries + 1)).mean()])  # query 1: both
    assert list(s.role[1]) == ["previous-token", "first-token", ""]
    rows = s.rows()
    assert len(rows) == 6 and rows[3]["layer"] == 1 and rows[3]["role"] == "previous-token"
    assert "previous-token" in format_head_table(s)


def test_padding_queries_and_empty_rows_are_left_out():
    T = 5
    P = np.broadcast_to(previous_token_head(T), (1, 2, 1, T, T)).copy()
    P[0, 1, 0, 3:] = 1.0 / T  # row 1's last queries are padding, attending everywhere
    P[0, 0, 0, 4] = 0.0  # a query with nothing to attend to (a fully masked row)
    valid = np.array([[True] * 5, [True, True, True, False, False]])
    s = head_summary(P, query_mask=valid)
    assert s.previous_token[0, 0] == 1.0 and s.entropy[0, 0] == 0.0


def test_cross_attention_offsets():
    """Tq < Tk: query i sits at key position i + Tk - Tq, as the causal rule aligns them."""
    Tq, Tk = 3, 6
    P = np.zeros((1, 1, 1, Tq, Tk))
    P[0, 0, 0, np.arange(Tq), np.arange(Tq) + Tk - Tq - 1] = 1.0
    s = head_summary(P)
    assert s.previous_token[0, 0] == 1.0 and s.distance[0, 0] == 1.0


def test_errors():
    with pytest.raises(ValueError, match=r"maps must be \(L, B, H, Tq, Tk\)"):
        head_summary(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="query_mask must be"):
        head_summary(np.ones((1, 1, 1, 3, 3)) / 3, query_mask=np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="no query has a token before it"):
        head_summary(np.ones((1, 1, 1, 1, 1)))
    assert math.isclose(head_summary(np.ones((1, 1, 1, 2, 2)) / 2).entropy[0, 0], math.log(2))
