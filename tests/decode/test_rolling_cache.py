"""The rolling key/value cache of sliding-window attention: it keeps the last W positions (a ring buffer, fixed
memory), hands attention the held positions in order, and decoding with it, one token or a prefill of several at a
time, equals the full forward with the window: at the attention layer and for a GPT with ``window``."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.decode import RollingKVCache, generate, make_kv_caches
from npformer.decode.kv_cache import KVCache
from npformer.kernels import use_kernels
from npformer.models import GPT, GPTConfig
from npformer.nn import MultiHeadAttention

from ..helpers import randomize_parameters
from ..strategies import TOL, kernel_fields, normal_array, seeds


def chunks(total):
    """Sizes of successive calls that add up to ``total``: a prefill of several tokens, then any mix."""
    return st.lists(st.integers(1, 4), min_size=1, max_size=total).map(lambda sizes: _cut(sizes, total))


def _cut(sizes, total):
    out, left = [], total
    for s in sizes:
        if left == 0:
            break
        out.append(min(s, left))
        left -= out[-1]
    if left:
        out.append(left)
    return out


def assert_close(got, want, what=""):
    rtol, atol = TOL[np.dtype(np.float64)]
    np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------------------------------------------
# the buffer
# ---------------------------------------------------------------------------------------------------------------
@given(window=st.integers(1, 5), sizes=chunks(12))
def test_update_returns_the_held_positions_in_order(xp_backend, window, sizes):
    """Keys whose values are their positions: each update returns positions max(0, t - W) .. t + n - 1 in order,
    and the buffers never grow."""
    cache = RollingKVCache(2, 1, window, 3, dtype="float64")
    nbytes = cache.nbytes
    t = 0
    for n in sizes:
        pos = np.broadcast_to(np.arange(t, t + n, dtype=np.float64)[None, None, :, None], (2, 1, n, 3))
        k_all, v_all = cache.update(backend.asarray(pos.copy()), backend.asarray(-pos))
        want = np.arange(max(0, t - window), t + n, dtype=np.float64)
        np.testing.assert_array_equal(backend.to_numpy(k_all)[0, 0, :, 0], want)
        np.testing.assert_array_equal(backend.to_numpy(v_all)[1, 0, :, 2], -want)
        t += n
        assert cache.length == t and cache.nbytes == nbytes and cache.k.shape == (2, 1, window, 3)


def test_returned_keys_are_not_overwritten_by_the_next_update(xp_backend):
    """What attention got from one update stays as it was after the ring moves on."""
    cache = RollingKVCache(1, 1, 2, 1, dtype="float64")
    first = [cache.update(*(backend.asarray(np.full((1, 1, 1, 1), float(t))) for _ in range(2)))[0]
             for t in range(4)]
    assert [backend.to_numpy(k).ravel().tolist() for k in first] == [[0.0], [0.0, 1.0], [0.0, 1.0, 2.0],
                                                                     [1.0, 2.0, 3.0]]


def test_errors_name_the_problem(xp_backend):
    with pytest.raises(ValueError, match="RollingKVCache: window must be a positive integer"):
        RollingKVCache(1, 1, 0, 4)
    with pytest.raises(TypeError, match="RollingKVCache: dtype must be a float dtype"):
        RollingKVCache(1, 1, 2, 4, dtype="int32")
    cache = RollingKVCache(2, 3, 4, 5, dtype="float64")
    with pytest.raises(ValueError, match=r"RollingKVCache: k must be \(B, Hkv, T_new, D\)"):
        cache.update(backend.asarray(np.zeros((2, 2, 1, 5))), backend.asarray(np.zeros((2, 2, 1, 5))))
    with pytest.raises(TypeError, match="RollingKVCache: v has dtype float32"):
        cache.update(backend.asarray(np.zeros((2, 3, 1, 5))), backend.asarray(np.zeros((2, 3, 1, 5), np.float32)))
    with pytest.raises(ValueError, match="k has 2 new positions but v has 1"):
        cache.update(backend.asarray(np.zeros((2, 3, 2, 5))), backend.asarray(np.zeros((2, 3, 1, 5))))
    cache.update(backend.asarray(np.zeros((2, 3, 3, 5))), backend.asarray(np.zeros((2, 3, 3, 5))))
    cache.reset()
    assert cache.length == 0 and "window=4" in repr(cache)


# ---------------------------------------------------------------------------------------------------------------
# decoding equals the full forward
# ---------------------------------------------------------------------------------------------------------------
@given(window=st.integers(1, 5), sizes=chunks(9), rope=st.booleans(), n_kv_head=st.sampled_from([1, 2]),
       impl=st.sampled_from(["plain", "flash"]), kernels=st.sampled_from(["reference", "fast"]), seed=seeds())
def test_attention_layer_with_rolling_cache_equals_full_forward(xp_backend, window, sizes, rope, n_kv_head, impl,
                                                                kernels, seed):
    """MultiHeadAttention(window=W): the whole sequence at once, causal, against the same sequence fed in chunks
    through a W-slot rolling cache (each chunk at its positions, for RoPE)."""
    T = sum(sizes)
    with backend.float64(), use_kernels(kernels):
        layer = randomize_parameters(MultiHeadAttention(8, 2, n_kv_head, rope=rope, impl=impl, window=window), seed)
        x = backend.asarray(normal_array(seed, (2, T, 8)))
        full = layer.forward(x, causal=True, positions=backend.xp().arange(T))
        cache = RollingKVCache(2, n_kv_head, window, 4, dtype="float64")
        outs, t = [], 0
        for n in sizes:
            outs.append(layer.forward(x[:, t:t + n], causal=True, positions=backend.xp().arange(t, t + n),
                                      kv_cache=cache))
            t += n
        layer.drop_caches()
    assert_close(backend.xp().concatenate(outs, axis=1), full, f"W={window} chunks={sizes} rope={rope}")


def window_gpt(window, positions="rope", seed=0, kernels=None, block_size=16, attn_impl="plain"):
    cfg = GPTConfig(vocab_size=11, block_size=block_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                    ffn_hidden=24, positions=positions, window=window, kernels=kernels, seed=seed,
                    attn_impl=attn_impl)
    return randomize_parameters(GPT(cfg).astype(np.float64), seed).eval()


@given(window=st.integers(1, 6), sizes=chunks(14), positions=st.sampled_from(["learned", "sinusoidal", "rope"]),
       kernels=kernel_fields(), attn_impl=st.sampled_from(["plain", "flash"]), seed=seeds())
def test_gpt_decoding_with_rolling_caches_equals_full_forward(xp_backend, window, sizes, positions, kernels,
                                                              attn_impl, seed):
    """A GPT with ``window``: make_kv_caches gives W-slot rolling caches, and the hidden states of the sequence
    fed in chunks (the first a prefill of several tokens) equal those of one full forward."""
    with backend.float64():
        model = window_gpt(window, positions, seed % 100, kernels, attn_impl=attn_impl)
        ids = np.random.default_rng(seed).integers(0, 11, size=(2, sum(sizes)))
        full = model.hidden_states(ids)
        caches = make_kv_caches(model, 2, ids.shape[1])
        rolling = window < ids.shape[1]
        assert all(isinstance(c, RollingKVCache if rolling else KVCache) for c in caches)
        outs, t = [], 0
        for n in sizes:
            outs.append(model.hidden_states(ids[:, t:t + n], pos_offset=t, kv_caches=caches))
            t += n
        model.drop_caches()
    assert_close(backend.xp().concatenate(outs, axis=1), full, f"W={window} chunks={sizes} {positions}")
    if rolling:  # what the caches hold is W positions per layer, however long the sequence
        assert sum(c.nbytes for c in caches) == 2 * 2 * (2 * 2 * window * 4) * 8


@pytest.mark.parametrize("window", [1, 3, 7])
def test_generate_with_rolling_cache_equals_without_cache(xp_backend, window):
    """Greedy generation from a window model: with the rolling caches, the same tokens as re-encoding every step."""
    with backend.float64():
        model = window_gpt(window, "rope", seed=window)
        prompt = [1, 2, 3, 4, 5]
        cached = generate(model, prompt, 10, temperature=0, use_cache=True)
        plain = generate(model, prompt, 10, temperature=0, use_cache=False)
    np.testing.assert_array_equal(cached[0], plain[0])


def test_make_kv_caches_keeps_full_caches_without_a_short_window(xp_backend):
    for window, max_len in ((None, 8), (8, 8), (12, 8)):
        caches = make_kv_caches(window_gpt(window), 1, max_len)
        assert all(type(c) is KVCache and c.max_len == max_len for c in caches)
    caches = make_kv_caches(window_gpt(3), 1, 8)
    assert all(type(c) is RollingKVCache and c.window == 3 for c in caches)
