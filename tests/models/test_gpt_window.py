"""A GPT with sliding-window attention (GPTConfig.window, Mistral's sliding_window): the window reaches every
block's attention; whole-model gradients; a window as long as the context changes nothing; a position never hears
a token further back than its receptive field, L (W - 1) positions. (The attention maths and the rolling KV cache
are tested in tests/functional and tests/decode.)"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.models import GPT, GPTConfig

from ..helpers import randomize_parameters, reseed_dropout
from ..strategies import GRAD_ATOL, GRAD_RTOL, gpt_configs, seeds

WINDOW_CONFIGS = gpt_configs(max_block=6, attn_impls=("plain", "flash"))


def test_window_reaches_every_block_and_the_llama_preset_takes_it():
    model = GPT(GPTConfig.preset("llama-style", n_layer=3, n_embd=16, n_head=4, window=5))
    assert model.config.window == 5
    assert [block.attn.window for block in model.blocks] == [5, 5, 5]
    assert all(block.attn.window is None for block in GPT(GPTConfig(n_layer=2, n_embd=8, n_head=2)).blocks)
    for bad in (0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="window must be a positive integer or None"):
            GPTConfig(window=bad)


@given(WINDOW_CONFIGS, st.integers(1, 3), st.integers(1, 2), seeds())
def test_windowed_gpt_gradients(config, window, B, seed):
    """Every parameter's gradient of a windowed GPT against central differences (float64, rel. error < 1e-6).
    On the default backend only (CI's second run makes that the CuPy stand-in): the attention pairs are checked on
    both backends in tests/functional."""
    config = dataclasses.replace(config, window=window)
    with backend.float64():
        model = randomize_parameters(GPT(config), seed)
        rng = np.random.default_rng(seed)
        idx = backend.asarray(rng.integers(0, config.vocab_size, size=(B, config.block_size)))
        targets = backend.asarray(rng.integers(0, config.vocab_size, size=(B, config.block_size)))

        def loss_fn():
            reseed_dropout(model)
            return model.loss(idx, targets)

        report = check_model(loss_fn, model.backward, model.named_parameters(), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        assert report.passed, f"{config}\n{report}"


@given(WINDOW_CONFIGS, st.integers(0, 2), seeds())
def test_a_window_as_long_as_the_context_changes_nothing(config, longer, seed):
    config = dataclasses.replace(config, dropout=0.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(2, config.block_size))
    tgt = rng.integers(0, config.vocab_size, size=(2, config.block_size))
    results = []
    for window in (None, config.block_size + longer):
        with backend.float64():
            model = randomize_parameters(GPT(dataclasses.replace(config, window=window)), seed)
        loss = backend.to_float(model.loss(idx, tgt))
        model.backward()
        results.append((loss, {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for name, grad in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], grad, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("attn_impl", ["plain", "flash"])
@pytest.mark.parametrize("n_layer, window", [(1, 1), (1, 3), (2, 2), (2, 3)])
def test_receptive_field_is_n_layer_times_window_minus_one(attn_impl, n_layer, window):
    """Position t sees positions down to t - L (W - 1) and no further: changing the token just beyond changes
    none of the logits from there on; changing the token at the edge changes the logits at t."""
    T, reach = 12, n_layer * (window - 1)
    config = GPTConfig.preset("llama-style", vocab_size=7, block_size=T, n_layer=n_layer, n_head=2, n_embd=8,
                              window=window, attn_impl=attn_impl)
    with backend.float64():
        model = randomize_parameters(GPT(config), 3)
    idx = np.random.default_rng(0).integers(0, 7, size=(1, T))
    logits = backend.to_numpy(model.forward(idx))
    s = 1  # the changed position
    changed = idx.copy()
    changed[0, s] = (idx[0, s] + 1) % 7
    other = backend.to_numpy(model.forward(changed))
    beyond = s + reach + 1  # the first position that must not hear position s
    np.testing.assert_array_equal(other[:, beyond:], logits[:, beyond:])
    assert not np.allclose(other[:, s + reach], logits[:, s + reach])  # the edge of the field still hears it
