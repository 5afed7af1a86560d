"""The GPT model: whole-model gradient checks over the option space, config validation, basic behaviour."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.models import GPT, GPTConfig

from ..helpers import randomize_parameters, reseed_dropout
from ..strategies import GRAD_ATOL, GRAD_RTOL, gpt_configs, seeds


@given(gpt_configs(), st.integers(1, 2), seeds())
def test_whole_model_gradients(xp_backend, config, B, seed):
    """Every parameter's gradient matches central differences (float64, normwise rel. error < 1e-6), every
    parameter (norm weights and biases included) drawn on its own, so no two same-shaped ones are equal."""
    with backend.float64():
        model = randomize_parameters(GPT(config), seed)
        rng = np.random.default_rng(seed)
        T = config.block_size
        idx = backend.asarray(rng.integers(0, config.vocab_size, size=(B, T)))
        targets = backend.asarray(rng.integers(0, config.vocab_size, size=(B, T)))

        def loss_fn():
            reseed_dropout(model)
            return model.loss(idx, targets)

        report = check_model(loss_fn, model.backward, model.named_parameters(), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        assert report.passed, f"{config}\n{report}"


def test_initial_loss_is_log_vocab():
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 50, size=(4, 16))
    loss = backend.to_float(model.loss(idx, rng.integers(0, 50, size=(4, 16))))
    assert abs(loss - math.log(50)) < 0.1


def test_gpt2_init_scales_residual_projections():
    config = GPTConfig(vocab_size=50, n_layer=8, n_head=4, n_embd=128)
    model = GPT(config)
    params = dict(model.named_parameters())
    std_proj = float(np.std(backend.to_numpy(params["blocks.0.attn.proj.weight"].data)))
    std_fc = float(np.std(backend.to_numpy(params["blocks.0.ffn.fc.weight"].data)))
    assert abs(std_fc - 0.02) < 0.002
    assert abs(std_proj - 0.02 / math.sqrt(16)) < 0.001


def test_tied_embeddings_share_one_parameter():
    tied = GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, n_embd=8, tie_embeddings=True))
    untied = GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, n_embd=8, tie_embeddings=False))
    assert untied.num_parameters() - tied.num_parameters() == 10 * 8
    assert "lm_head" not in dict(tied.named_parameters())


def test_float32_step_stays_float32():
    model = GPT(GPTConfig.preset("llama-style", vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    rng = np.random.default_rng(0)
    idx = backend.asarray(rng.integers(0, 11, size=(2, 8)))
    loss = model.loss(idx, idx)
    assert loss.dtype == np.float32
    model.backward()
    assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())


def test_presets_and_config_errors():
    llama = GPTConfig.preset("llama-style", n_head=4, n_embd=32)
    assert (llama.norm, llama.ffn_kind, llama.positions, llama.bias, llama.n_kv_head) == (
        "rmsnorm", "swiglu", "rope", False, 2)
    gpt2 = GPTConfig.preset("gpt2-style")
    assert (gpt2.norm, gpt2.positions, gpt2.tie_embeddings) == ("layernorm", "learned", True)
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.preset("bert")
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="does not divide n_head"):
        GPTConfig(n_embd=24, n_head=6, n_kv_head=4)
    with pytest.raises(ValueError, match="ffn_kind must be one of"):
        GPTConfig(ffn_kind="tanh")
    with pytest.raises(ValueError, match="unknown field"):
        GPTConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="kernels must be one of"):
        GPTConfig(kernels="turbo")



def test_bad_inputs_are_named():
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="exceed the context length"):
        model.forward(np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        model.forward(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="out of range|outside"):
        model.forward(np.array([[1, 7]]))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model.forward(np.zeros(3, dtype=np.int64))
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()


@given(gpt_configs(), seeds())
def test_recompute_gives_identical_gradients(config, seed):
    """Activation recomputation (caches dropped after each block's forward, rebuilt in backward) changes memory,
    not results: same loss, same gradients bit for bit, dropout masks included."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(2, config.block_size))
    tgt = rng.integers(0, config.vocab_size, size=(2, config.block_size))
    results = []
    for recompute in (False, True):
        config.recompute = recompute
        model = randomize_parameters(GPT(config), seed)
        loss = model.loss(idx, tgt)
        if recompute:
            assert all(block._cache_inputs is not None and block.attn._cache is None for block in model.blocks)
        model.backward()
        results.append((backend.to_float(loss), {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}))
    assert results[0][0] == results[1][0]
    for name in results[0][1]:
        np.testing.assert_array_equal(results[0][1][name], results[1][1][name], err_msg=name)
