"""MultiHeadAttention(window=W): its backward against finite differences (float64, either tier, plain or flash,
RoPE or not, grouped heads), the window reaching the kernel, and the options it refuses."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_layer
from npformer.kernels import KERNEL_TIERS, use_kernels
from npformer.nn import MultiHeadAttention

from ..helpers import randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, normal_array, seeds


@given(seed=seeds(), B=st.integers(1, 2), T=st.integers(1, 6), window=st.integers(1, 4), rope=st.booleans(),
       n_kv_head=st.sampled_from([1, 2]), impl=st.sampled_from(["plain", "flash"]),
       tier=st.sampled_from(KERNEL_TIERS))
def test_window_layer_gradients(xp_backend, seed, B, T, window, rope, n_kv_head, impl, tier):
    with backend.float64(), use_kernels(tier):
        layer = randomize_parameters(MultiHeadAttention(8, 2, n_kv_head, rope=rope, impl=impl, window=window), seed,
                                     scale=0.4)
        x = backend.asarray(normal_array(seed, (B, T, 8)))
        check_layer(layer, x, causal=True, rtol=GRAD_RTOL, atol=GRAD_ATOL).assert_ok()


def test_window_changes_the_output_only_past_w(xp_backend):
    """The first W positions see everything they would without a window; later ones do not."""
    with backend.float64():
        x = backend.asarray(normal_array(0, (1, 6, 8)))
        full = MultiHeadAttention(8, 2, rng=1).forward(x, causal=True)
        local = MultiHeadAttention(8, 2, rng=1, window=2).forward(x, causal=True)
    diff = np.abs(backend.to_numpy(full - local)).max(axis=-1)[0]
    assert np.all(diff[:2] < 1e-12) and np.all(diff[2:] > 1e-6), diff


@pytest.mark.parametrize("window", [0, -3, True, 1.5, "2"])
def test_bad_windows_are_refused(window):
    with pytest.raises(ValueError, match="window must be None or a positive int"):
        MultiHeadAttention(8, 2, window=window)


def test_window_is_for_causal_self_attention(xp_backend):
    with pytest.raises(ValueError, match="not cross-attention"):
        MultiHeadAttention(8, 2, cross=True, window=2)
    layer = MultiHeadAttention(8, 2, window=2)
    assert layer.window == 2 and MultiHeadAttention(8, 2, window=np.int32(3)).window == 3
    with pytest.raises(ValueError, match="needs causal=True"):
        layer.forward(backend.asarray(normal_array(0, (1, 3, 8), np.float32)))
