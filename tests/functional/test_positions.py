"""Rotary position embedding (gradients, rotation properties, offsets) and the sinusoidal table (known values)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.functional.positions import rope_backward, rope_forward, sinusoidal_positions
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, normal_array, seeds


def even_dims(max_half=4):
    return st.integers(1, max_half).map(lambda n: 2 * n)


def host(a):
    return backend.to_numpy(a)


@st.composite
def rope_cases(draw, max_t=6):
    """x (lead..., T, D) with D even, and positions: None, (T,) with an offset, or a per-batch (B, 1, T) array."""
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    T, D = draw(st.integers(1, max_t)), draw(even_dims())
    x = normal_array(draw(seeds()), lead + (T, D))
    kind = draw(st.sampled_from(["default", "offset", "per_row"]))
    positions = None
    if kind == "offset":
        positions = draw(st.integers(0, 10_000)) + np.arange(T)
    elif kind == "per_row":
        positions = np.asarray(draw(st.lists(st.integers(0, 500), min_size=T, max_size=T)))
        if lead:  # a different offset per leading row, broadcast over the rest
            offsets = np.asarray(draw(st.lists(st.integers(0, 100), min_size=lead[0], max_size=lead[0])))
            positions = (offsets.reshape((lead[0],) + (1,) * len(lead)) + positions)
    base = draw(st.sampled_from([10000.0, 500.0, 1e6]))
    return x, positions, base


def rope(x, positions=None, base=10000.0):
    pos = None if positions is None else backend.asarray(positions)
    return rope_forward(backend.asarray(x), pos, base)


# ---------------------------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------------------------
@given(rope_cases(max_t=4))
def test_rope_gradients_match_finite_differences(xp_backend, case):
    x, positions, base = case
    inputs = dict(x=backend.asarray(x), positions=None if positions is None else backend.asarray(positions),
                  base=base)
    report = check_gradients(rope_forward, rope_backward, inputs, wrt=("x",), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"x{x.shape}\n{report}"


def test_rope_known_value():
    """D = 2: the single pair rotates by exactly p radians; D = 4: the second pair by p / sqrt(base)."""
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # (T=3, D=2)
    y, _ = rope_forward(x)
    np.testing.assert_allclose(y, [[1.0, 0.0], [math.cos(1), math.sin(1)], [-math.sin(2), math.cos(2)]],
                               rtol=1e-15, atol=1e-15)
    x4 = np.array([[0.0, 1.0, 0.0, 0.0]])  # pair 1 = (x[1], x[3]) = (1, 0)
    y4, _ = rope_forward(x4, positions=np.array([3]), base=100.0)
    angle = 3 * 100.0 ** (-2 * 1 / 4)
    np.testing.assert_allclose(y4, [[0.0, math.cos(angle), 0.0, math.sin(angle)]], rtol=1e-15, atol=1e-15)


@given(rope_cases())
def test_rope_keeps_norms_of_each_pair(xp_backend, case):
    x, positions, base = case
    y = host(rope(x, positions, base)[0])
    half = x.shape[-1] // 2
    pair_x = np.hypot(x[..., :half], x[..., half:])
    pair_y = np.hypot(y[..., :half], y[..., half:])
    np.testing.assert_allclose(pair_y, pair_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12, atol=1e-12)


@given(seeds(), even_dims(), st.integers(0, 50), st.integers(0, 50), st.integers(-40, 2000))
def test_rope_dot_product_depends_only_on_offset(xp_backend, seed, D, m, n, shift):
    """<rope(q, m), rope(k, n)> = <rope(q, m + s), rope(k, n + s)>: attention scores see relative positions."""
    shift = max(shift, -min(m, n))  # positions stay >= 0 (negative ones work too, but keep it the usual case)
    q, k = normal_array(seed, (1, D)), normal_array(seed + 1, (1, D))
    dot = float(np.sum(host(rope(q, np.array([m]))[0]) * host(rope(k, np.array([n]))[0])))
    dot_shifted = float(np.sum(host(rope(q, np.array([m + shift]))[0]) * host(rope(k, np.array([n + shift]))[0])))
    assert dot_shifted == pytest.approx(dot, rel=1e-9, abs=1e-9)
    if m != n and D >= 2:  # and it does depend on the offset: the test could fail
        moved = float(np.sum(host(rope(q, np.array([m + 1]))[0]) * host(rope(k, np.array([n]))[0])))
        assert not math.isclose(moved, dot, rel_tol=1e-12) or abs(dot) < 1e-12


@given(seeds(), st.integers(1, 3), st.integers(1, 8), st.integers(1, 8), even_dims())
def test_rope_with_offset_equals_slice_of_longer_sequence(xp_backend, seed, H, T0, T, D):
    """Decoding with a cache: positions T0..T0+T-1 give the same rotation as those rows of a sequence of T0+T."""
    x = normal_array(seed, (2, H, T0 + T, D))
    full = host(rope(x)[0])
    part = host(rope(x[:, :, T0:], T0 + np.arange(T))[0])
    np.testing.assert_allclose(part, full[:, :, T0:], rtol=1e-12, atol=1e-12)


@given(rope_cases())
def test_rope_backward_is_the_inverse_rotation(xp_backend, case):
    x, positions, base = case
    y, cache = rope(x, positions, base)
    np.testing.assert_allclose(host(rope_backward(y, cache)), x, rtol=1e-12, atol=1e-12)


@given(rope_cases())
def test_rope_float32_stays_float32(xp_backend, case):
    x, positions, base = case
    y32, cache = rope(x.astype(np.float32), positions, base)
    dx32 = rope_backward(backend.asarray(x.astype(np.float32)), cache)
    assert y32.dtype == np.float32 and dx32.dtype == np.float32
    y64, _ = rope(x, positions, base)
    assert y64.dtype == np.float64
    rtol, atol = TOL[np.dtype(np.float32)]
    np.testing.assert_allclose(host(y32), host(y64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("D", [1, 3, 7])
def test_rope_odd_head_size_raises(D):
    with pytest.raises(ValueError, match=rf"^rope: head size D={D} is odd"):
        rope_forward(np.zeros((2, 4, D)))


def test_rope_bad_positions_raise():
    x = np.zeros((2, 3, 5, 4))
    with pytest.raises(TypeError, match=r"^rope: positions must be an integer array"):
        rope_forward(x, positions=np.arange(5.0))
    with pytest.raises(ValueError, match=r"^rope: positions of shape \(4,\) do not broadcast to"):
        rope_forward(x, positions=np.arange(4))
    with pytest.raises(TypeError, match=r"^rope: x must be a float array"):
        rope_forward(np.zeros((5, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"^rope: base must be a positive"):
        rope_forward(x, base=0.0)


# ---------------------------------------------------------------------------------------------------------------
# sinusoidal table
# ---------------------------------------------------------------------------------------------------------------
def test_sinusoidal_known_values(xp_backend):
    with backend.float64():
        pe = host(sinusoidal_positions(5, 6))
    assert pe.shape == (5, 6) and pe.dtype == np.float64
    np.testing.assert_array_equal(pe[0], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    # by hand: position 2, pair i = 1 (columns 2, 3): angle = 2 / 10000^(2/6) = 2 / 21.544346...
    angle = 2.0 / 21.544346900318832
    assert pe[2, 2] == pytest.approx(math.sin(angle), rel=1e-13)
    assert pe[2, 3] == pytest.approx(math.cos(angle), rel=1e-13)
    assert pe[3, 0] == pytest.approx(math.sin(3.0), rel=1e-13)
    assert pe[3, 1] == pytest.approx(math.cos(3.0), rel=1e-13)


@given(st.integers(1, 30), st.integers(1, 17))
def test_sinusoidal_matches_formula_and_dtype(xp_backend, T, C):
    pe32 = sinusoidal_positions(T, C)
    assert pe32.dtype == backend.float_dtype() == np.float32 and pe32.shape == (T, C)
    assert backend.array_module(pe32) is xp_backend
    pe = host(sinusoidal_positions(T, C, dtype=np.float64))
    p, c = np.meshgrid(np.arange(T), np.arange(C), indexing="ij")
    angle = p / 10000.0 ** ((c // 2) * 2 / C)
    expected = np.where(c % 2 == 0, np.sin(angle), np.cos(angle))  # odd C: the last column is a sin column
    np.testing.assert_allclose(pe, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(pe32), expected, rtol=1e-6, atol=1e-6)


def test_sinusoidal_bad_sizes_raise():
    for T, C in ((0, 4), (4, 0), (2.5, 4)):
        with pytest.raises(ValueError, match=r"^sinusoidal_positions: T and C must be positive integers"):
            sinusoidal_positions(T, C)
    with pytest.raises(TypeError, match=r"^sinusoidal_positions: dtype must be a float dtype"):
        sinusoidal_positions(3, 4, dtype=np.int32)
