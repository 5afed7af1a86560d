"""Generation: cached decoding equals full forward passes, the sampling filters, stop tokens, batches, crops, errors.
(The cache itself is in test_kv_cache.py; examples/sample.py in tests/test_examples.py.)"""

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.decode.generate import filter_logits, generate, next_token_logits, sample_next
from npformer.decode.kv_cache import make_kv_caches
from npformer.models import GPT, GPTConfig

from ..helpers import randomize_parameters
from ..strategies import TOL, gpt_configs, seeds


def _model(config, seed, scale=0.5):
    """A GPT with every parameter drawn on its own, larger than its 0.02 init, so every path (and every position)
    carries signal; in eval mode."""
    return randomize_parameters(GPT(config), seed, scale).eval()


def _tiny(positions="learned", vocab_size=7, block_size=8, n_kv_head=2, dtype="float64", seed=0, **kw):
    with backend.float64() if dtype == "float64" else contextlib.nullcontext():
        cfg = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_kv_head=n_kv_head,
                        n_embd=8, positions=positions, seed=seed, **kw)
        return _model(cfg, seed)


def _full_last_logits(model, ids):
    """Reference: a full forward over the whole (B, T) host sequence, the last position's logits on the host."""
    return backend.to_numpy(model.forward(backend.asarray(ids)))[:, -1]


# -- the key/value cache is exact --------------------------------------------------------------------------------
# MHA, GQA and MQA (up to 3 query heads per key/value head), both attention kernels
DECODE_CONFIGS = gpt_configs(max_group=3, max_vocab=9, max_block=6, attn_impls=("plain", "flash"))


@given(DECODE_CONFIGS, st.integers(1, 2), st.integers(1, 4), st.integers(0, 3), seeds())
def test_cached_decoding_matches_full_forward(xp_backend, config, B, n_prompt, extra, seed):
    """Feed a prompt, then one token at a time: each step's logits equal a full forward's last position (float64).
    RoPE and sinusoidal positions are also run past block_size (they have no table to run out of)."""
    with backend.float64():
        model = _model(config, seed)  # in eval mode: dropout (p = 0.3 in some draws) is off
        T = config.block_size + (extra if config.positions != "learned" else 0)
        ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=(B, T))
        n_prompt = min(n_prompt, T)
        caches = make_kv_caches(model, B, T)
        got = next_token_logits(model, backend.asarray(ids[:, :n_prompt]), 0, caches)
        assert got.dtype == np.float64 and caches[0].k.dtype == np.float64
        np.testing.assert_allclose(backend.to_numpy(got), _full_last_logits(model, ids[:, :n_prompt]),
                                   rtol=1e-10, atol=1e-10, err_msg=f"prefill {config}")
        for t in range(n_prompt, T):
            step = model.forward(backend.asarray(ids[:, t:t + 1]), pos_offset=t, kv_caches=caches)  # (B, 1, V)
            assert step.shape == (B, 1, config.vocab_size) and step.dtype == np.float64
            np.testing.assert_allclose(backend.to_numpy(step)[:, 0], _full_last_logits(model, ids[:, :t + 1]),
                                       rtol=1e-10, atol=1e-10, err_msg=f"step {t} {config}")
        assert all(c.length == T for c in caches)


def test_cached_decoding_float32(xp_backend):
    """float32 in, float32 cache, float32 logits, close to the full forward within the float32 tolerance."""
    model = _tiny("rope", dtype="float32", n_kv_head=1)
    ids = np.random.default_rng(1).integers(0, 7, size=(2, 8))
    caches = make_kv_caches(model, 2, 8)
    assert caches[0].k.dtype == np.float32
    next_token_logits(model, backend.asarray(ids[:, :3]), 0, caches)
    for t in range(3, 8):
        got = next_token_logits(model, backend.asarray(ids[:, t:t + 1]), t, caches)
        assert got.dtype == np.float32
        rtol, atol = TOL[np.dtype(np.float32)]
        np.testing.assert_allclose(backend.to_numpy(got), _full_last_logits(model, ids[:, :t + 1]),
                                   rtol=rtol, atol=10 * atol)


def test_each_new_token_runs_one_position(xp_backend):
    """With the cache the prompt is encoded once, then every step runs the model on a single position."""
    model = _tiny("learned")
    seen = []
    original = model.hidden_states

    def spy(idx, pos_offset=0, kv_caches=None):
        seen.append((idx.shape[1], pos_offset, kv_caches is not None))
        return original(idx, pos_offset=pos_offset, kv_caches=kv_caches)

    model.hidden_states = spy
    generate(model, [1, 2, 3], max_new_tokens=4, seed=0)
    assert seen == [(3, 0, True), (1, 3, True), (1, 4, True), (1, 5, True)]
    seen.clear()
    generate(model, [1, 2, 3], max_new_tokens=4, seed=0, use_cache=False)
    assert seen == [(3, 0, False), (4, 0, False), (5, 0, False), (6, 0, False)]


# -- sampling filters ------------------------------------------------------------------------------------------
@given(st.integers(2, 12), st.data(), seeds(), st.sampled_from([0.5, 1.0, 3.0]))
def test_top_k_never_samples_outside_the_k_best(V, data, seed, temperature):
    k = data.draw(st.integers(1, V), label="k")
    logits = np.random.default_rng(seed).standard_normal(V) * 3
    draws = sample_next(np.tile(logits, (400, 1)), np.random.default_rng(seed + 1), temperature, top_k=k)
    best = set(np.argsort(-logits)[:k].tolist())
    assert draws.dtype == np.int64 and draws.shape == (400,)
    assert set(draws.tolist()) <= best, (logits, k, sorted(set(draws.tolist()) - best))
    kept = np.isfinite(filter_logits(logits[None], top_k=k)[0])
    assert kept.sum() == k and set(np.flatnonzero(kept).tolist()) == best


@given(st.integers(2, 12), st.floats(0.01, 1.0), seeds(), st.sampled_from([0.5, 1.0, 3.0]))
def test_top_p_never_samples_outside_the_nucleus(V, top_p, seed, temperature):
    """Nucleus, defined independently: token j belongs iff the tokens strictly more probable than j hold < top_p."""
    logits = np.random.default_rng(seed).standard_normal(V) * 3
    z = logits / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    nucleus = {j for j in range(V) if p[p > p[j]].sum() < top_p}
    draws = sample_next(np.tile(logits, (400, 1)), np.random.default_rng(seed + 1), temperature, top_p=top_p)
    assert set(draws.tolist()) <= nucleus, (logits, top_p, sorted(set(draws.tolist()) - nucleus))
    kept = np.isfinite(filter_logits(z[None], top_p=top_p)[0])
    assert set(np.flatnonzero(kept).tolist()) == nucleus


def test_sampling_frequencies_follow_the_filtered_distribution():
    """top-k then top-p, renormalised: empirical frequencies match the kept probabilities (a seeded draw)."""
    logits = np.log(np.array([0.05, 0.30, 0.10, 0.25, 0.20, 0.10]))
    # top_k=4 keeps ids 1, 3, 4 and one of the 0.10s (id 2: ties go to the lower id); renormalised they are
    # 0.3/0.85, 0.25/0.85, 0.2/0.85, 0.1/0.85; the mass before id 4 is 0.647 < 0.7, before id 2 it is 0.882:
    # top_p=0.7 keeps ids 1, 3, 4.
    draws = sample_next(np.tile(logits, (30000, 1)), np.random.default_rng(0), 1.0, top_k=4, top_p=0.7)
    freq = np.bincount(draws, minlength=6) / draws.size
    expected = np.array([0, 0.30, 0, 0.25, 0.20, 0]) / 0.75
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_greedy_and_extreme_logits():
    logits = np.array([[1e4, -1e4, 3.0], [-1e4, -1e4, 1e4]])
    assert sample_next(logits, np.random.default_rng(0), 0.0).tolist() == [0, 2]
    assert sample_next(logits, np.random.default_rng(0), 1.0).tolist() == [0, 2]  # no NaN at magnitude 1e4
    tie = np.array([[2.0, 5.0, 5.0]])
    assert sample_next(tie, np.random.default_rng(0), 0.0).tolist() == [1]  # argmax: the first maximum


# -- generate ----------------------------------------------------------------------------------------------------
@given(st.sampled_from(["learned", "sinusoidal", "rope"]), st.integers(1, 2), st.integers(1, 5), seeds())
def test_greedy_is_argmax_of_full_forward_at_every_step(xp_backend, positions, n_kv_head, n_prompt, seed):
    """temperature 0: with cache == without cache == argmax of a full forward over the last W tokens, every step,
    including steps past block_size (the sliding window)."""
    model = _tiny(positions, n_kv_head=n_kv_head, block_size=4, seed=seed % 50)
    prompt = np.random.default_rng(seed).integers(0, 7, size=n_prompt)
    with backend.float64():
        cached = generate(model, prompt, max_new_tokens=7, temperature=0)[0]
        plain = generate(model, prompt, max_new_tokens=7, temperature=0, use_cache=False)[0]
    np.testing.assert_array_equal(cached, plain)
    assert cached.dtype == np.int64 and cached.shape == (n_prompt + 7,)
    np.testing.assert_array_equal(cached[:n_prompt], prompt)
    for t in range(n_prompt, n_prompt + 7):
        window = cached[None, max(0, t - 4):t]
        assert cached[t] == np.argmax(_full_last_logits(model, window)[0]), (t, cached)


@given(st.sampled_from(["learned", "sinusoidal", "rope"]), seeds())
def test_sampling_same_with_and_without_cache_and_seeded(xp_backend, positions, seed):
    model = _tiny(positions, block_size=5, seed=seed % 50)
    kw = dict(max_new_tokens=8, temperature=1.5, top_k=5, top_p=0.95, seed=seed)
    a = generate(model, [[1, 2], [3, 4]], **kw)
    b = generate(model, [[1, 2], [3, 4]], **kw)
    c = generate(model, [[1, 2], [3, 4]], use_cache=False, **kw)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_different_seeds_give_different_samples():
    model = _tiny("rope")
    outs = {tuple(generate(model, [0], max_new_tokens=12, temperature=2.0, seed=s)[0]) for s in range(5)}
    assert len(outs) > 1


def test_batch_rows_equal_single_prompts(xp_backend):
    model = _tiny("sinusoidal")
    prompts = np.array([[1, 2, 3], [4, 4, 0], [6, 5, 1]])
    batch = generate(model, prompts, max_new_tokens=6, temperature=0)
    listed = generate(model, prompts.tolist(), max_new_tokens=6, temperature=0)
    assert len(batch) == 3
    for row, out, out2 in zip(prompts, batch, listed):
        np.testing.assert_array_equal(out, generate(model, row, max_new_tokens=6, temperature=0)[0])
        np.testing.assert_array_equal(out, out2)


def test_stop_tokens_end_each_sequence_and_are_kept(xp_backend):
    """A row ends right after its first stop token (kept); the others go on. Every step draws one uniform per row,
    finished or not, so a seeded run with stop ids is the run without them, cut at each row's first stop."""
    model = _tiny("learned")
    prompts = [[1, 2], [5, 0], [3, 3]]
    for seed in range(4):
        free = generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=seed)
        stop = int(free[0][4])  # row 0's third generated token
        out = generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=seed, stop=stop)
        for full, cut in zip(free, out):
            hits = np.flatnonzero(full[2:] == stop)
            end = 2 + (hits[0] + 1 if hits.size else 8)
            np.testing.assert_array_equal(cut, full[:end])  # the stop token is the output's last token
        assert out[0][-1] == stop and len(out[0]) <= 5
        assert len({len(o) for o in out}) > 1, "rows were meant to stop at different steps"
    prompts = [[1, 2], [5, 0]]
    # a collection of stop ids; the batch ends as soon as every row has stopped
    calls = []
    original = model.hidden_states
    model.hidden_states = lambda *a, **k: calls.append(1) or original(*a, **k)
    out = generate(model, prompts, max_new_tokens=50, temperature=1.0, seed=0, stop=range(7))
    assert [len(o) for o in out] == [3, 3] and len(calls) == 1


def test_learned_positions_crop_long_prompts(xp_backend):
    model = _tiny("learned", block_size=4)
    prompt = np.array([1, 2, 3, 4, 5, 6, 0])
    out = generate(model, prompt, max_new_tokens=3, temperature=0)[0]
    cropped = generate(model, prompt[-4:], max_new_tokens=3, temperature=0)[0]
    np.testing.assert_array_equal(out[:7], prompt)  # the output keeps the whole prompt
    np.testing.assert_array_equal(out[7:], cropped[4:])
    with pytest.raises(ValueError, match="max_positions=6 exceeds block_size=4, the number of learned position"):
        generate(model, prompt, max_new_tokens=1, max_positions=6)


@pytest.mark.parametrize("positions", ["sinusoidal", "rope"])
def test_rope_and_sinusoidal_go_past_block_size_when_asked(xp_backend, positions):
    """Default window: block_size (prompt cropped like learned). max_positions=N: positions up to N - 1, exact."""
    model = _tiny(positions, block_size=4)
    prompt = np.array([1, 2, 3, 4, 5, 6])
    default = generate(model, prompt, max_new_tokens=2, temperature=0)[0]
    np.testing.assert_array_equal(default[6:], generate(model, prompt[-4:], max_new_tokens=2, temperature=0)[0][4:])
    with backend.float64():
        long = generate(model, prompt, max_new_tokens=4, temperature=0, max_positions=12)[0]
    for t in range(6, 10):
        assert long[t] == np.argmax(_full_last_logits(model, long[None, :t])[0])


def test_eval_mode_during_generation_and_restored(xp_backend):
    model = _tiny("learned", dropout=0.5)
    model.train()
    model.blocks[0].train(False)  # a mixed state comes back as it was
    a = generate(model, [1, 2], max_new_tokens=5, temperature=0)[0]
    b = generate(model, [1, 2], max_new_tokens=5, temperature=0, use_cache=False)[0]
    np.testing.assert_array_equal(a, b)  # no dropout: both paths see the same function
    assert model.training and model.drop.training and not model.blocks[0].training
    assert not model.blocks[0].drop1.training and model.blocks[1].drop1.training


def test_max_new_tokens_zero_returns_the_prompt():
    out = generate(_tiny(), [3, 1], max_new_tokens=0)
    assert len(out) == 1 and out[0].tolist() == [3, 1] and out[0].dtype == np.int64


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prompt_ids=[1, 9, 2]), ValueError, r"token id 9 at position 1 is outside the vocabulary \[0, 7\)"),
    (dict(prompt_ids=[[1, 2], [3, -1]]), ValueError, r"token id -1 at prompt 1 position 1 is outside"),
    (dict(prompt_ids=[]), ValueError, "empty prompt"),
    (dict(prompt_ids=np.zeros((2, 0), dtype=np.int64)), ValueError, "empty prompt"),
    (dict(prompt_ids=[[1, 2], [3]]), ValueError, "same length"),
    (dict(prompt_ids=[1.0, 2.0]), TypeError, "integer token ids"),
    (dict(prompt_ids=np.zeros((1, 1, 2), dtype=np.int64)), ValueError, "1-D .* or 2-D"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be a non-negative integer"),
    (dict(temperature=-0.5), ValueError, "temperature must be a finite number >= 0"),
    (dict(top_k=0), ValueError, "top_k must be a positive integer"),
    (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(stop=7), ValueError, r"stop id 7 is outside the vocabulary \[0, 7\)"),
    (dict(stop="a"), ValueError, "stop must be an int or a collection of ints"),
    (dict(max_positions=0), ValueError, "max_positions must be a positive integer"),
])
def test_errors_are_clear(kwargs, error, match):
    args = dict(prompt_ids=[1, 2], max_new_tokens=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        generate(_tiny(), **args)
