"""The BERT-style encoder: whole-model gradient checks on padded batches, padding invariance, bidirectionality,
the MLM masking recipe, dtypes and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.models import Encoder, EncoderConfig, mask_tokens
from npformer.models.encoder import IGNORE_INDEX

from ..helpers import PAD, padded_ids, randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, encoder_configs, seeds


@given(encoder_configs(), st.integers(1, 3), st.integers(1, 5), seeds(), st.sampled_from(["mlm", "cls"]))
def test_whole_encoder_gradients_on_padded_batches(xp_backend, config, B, T, seed, head):
    """Every parameter's gradient matches central differences (float64, normwise rel. error < 1e-6), for the
    MLM head and the classification head, on batches with uneven padding."""
    with backend.float64():
        model = Encoder(config)
        randomize_parameters(model, seed)
        rng = np.random.default_rng(seed)
        ids, _ = padded_ids(rng, B, T, config.vocab_size)
        ids = backend.asarray(ids)
        if head == "mlm":
            targets = rng.integers(0, config.vocab_size, size=(B, T))
            targets[rng.random((B, T)) < 0.4] = IGNORE_INDEX
            targets = backend.asarray(targets)

            def loss_fn():
                return model.mlm_loss(ids, targets)
        else:
            labels = backend.asarray(rng.integers(0, config.n_classes, size=B))

            def loss_fn():
                return model.classify_loss(ids, labels, label_smoothing=0.1)

        report = check_model(loss_fn, model.backward, model.named_parameters(), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        assert report.passed, f"{config}\n{report}"


@given(encoder_configs(), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), seeds())
def test_extra_padding_changes_nothing_at_real_positions(xp_backend, config, B, T, extra, seed):
    """Appending pad tokens leaves the hidden states at real positions, the MLM logits there and the class
    logits (both poolings) unchanged."""
    with backend.float64():
        model = Encoder(config)
        randomize_parameters(model, seed)
        ids, lengths = padded_ids(np.random.default_rng(seed), B, T, config.vocab_size)
        longer = np.concatenate([ids, np.full((B, extra), PAD)], axis=1)
        h_short = backend.to_numpy(model.hidden_states(backend.asarray(ids)))
        h_long = backend.to_numpy(model.hidden_states(backend.asarray(longer)))
        real = np.arange(T)[None, :] < lengths[:, None]
        np.testing.assert_allclose(h_long[:, :T][real], h_short[real], rtol=1e-10, atol=1e-10)
        m_short = backend.to_numpy(model.mlm_logits(backend.asarray(ids)))
        m_long = backend.to_numpy(model.mlm_logits(backend.asarray(longer)))
        np.testing.assert_allclose(m_long[:, :T][real], m_short[real], rtol=1e-10, atol=1e-10)
        c_short = backend.to_numpy(model.classify(backend.asarray(ids)))
        c_long = backend.to_numpy(model.classify(backend.asarray(longer)))
        np.testing.assert_allclose(c_long, c_short, rtol=1e-10, atol=1e-10)


@given(encoder_configs(), st.integers(2, 5), seeds())
def test_encoder_positions_see_later_tokens(xp_backend, config, T, seed):
    """Bidirectional: changing the last token changes the hidden state at position 0 (a causal model would not)."""
    # width 2 with a norm first maps every vector to +-(1, -1): too few states to show a dependence
    config = EncoderConfig.from_dict({**config.to_dict(), "n_embd": 4 * config.n_head, "ffn_kind": "gelu"})
    with backend.float64():
        model = Encoder(config)
        randomize_parameters(model, seed)
        ids = np.random.default_rng(seed).integers(1, config.vocab_size, size=(1, T))
        other = ids.copy()
        other[0, -1] = 1 + ids[0, -1] % (config.vocab_size - 1)  # a different real token
        h = backend.to_numpy(model.hidden_states(backend.asarray(ids)))
        h2 = backend.to_numpy(model.hidden_states(backend.asarray(other)))
        assert np.abs(h[0, 0] - h2[0, 0]).max() > 1e-8


@given(seeds(), st.integers(1, 6), st.integers(1, 12))
def test_mask_tokens_is_seeded_and_leaves_specials_alone(xp_backend, seed, B, T):
    V, MASK, CLS = 20, 1, 2
    ids, _ = padded_ids(np.random.default_rng(seed), B, T, V)
    ids = backend.asarray(ids)
    inputs, targets = mask_tokens(ids, MASK, V, seed, pad_id=PAD, special_ids=(CLS,), mask_prob=0.5)
    inputs2, targets2 = mask_tokens(ids, MASK, V, seed, pad_id=PAD, special_ids=(CLS,), mask_prob=0.5)
    ids, inputs, targets = (backend.to_numpy(a) for a in (ids, inputs, targets))
    assert inputs.dtype == np.int64 and targets.dtype == np.int64
    np.testing.assert_array_equal(inputs, backend.to_numpy(inputs2))
    np.testing.assert_array_equal(targets, backend.to_numpy(targets2))
    picked = targets != IGNORE_INDEX
    np.testing.assert_array_equal(targets[picked], ids[picked])  # targets are the original tokens
    np.testing.assert_array_equal(inputs[~picked], ids[~picked])  # unpicked inputs untouched
    special = (ids == PAD) | (ids == MASK) | (ids == CLS)
    assert not (picked & special).any()
    changed = inputs[picked & (inputs != MASK)]
    assert not np.isin(changed, [PAD, MASK, CLS]).any()  # random replacements are ordinary tokens


def test_mask_tokens_follows_the_15_80_10_10_recipe():
    V, MASK, N = 50, 1, 200_000
    ids = np.random.default_rng(0).integers(2, V, size=(N // 100, 100))
    inputs, targets = mask_tokens(ids, MASK, V, np.random.default_rng(1), pad_id=PAD)
    picked = targets != IGNORE_INDEX
    masked = picked & (inputs == MASK)
    kept = picked & (inputs == ids)
    randomised = picked & ~masked & ~kept
    assert abs(picked.mean() - 0.15) < 0.005
    assert abs(masked.sum() / picked.sum() - 0.8) < 0.01
    # a random replacement equals the original 1 time in 48: the "kept" share is 10% plus that sliver
    assert abs(kept.sum() / picked.sum() - 0.1 - 0.1 / 48) < 0.01
    assert abs(randomised.sum() / picked.sum() - 0.1 * 47 / 48) < 0.01


def test_mlm_head_is_tied_and_float32_stays_float32():
    config = EncoderConfig(vocab_size=11, max_len=8, n_layer=1, n_head=2, n_embd=8, n_classes=3, pooling="mean")
    model = Encoder(config)
    names = dict(model.named_parameters())
    assert "mlm_bias" in names and not any("mlm" in n and "weight" in n for n in names)  # no separate matrix
    ids = backend.asarray(np.random.default_rng(0).integers(1, 11, size=(2, 8)))
    inputs, targets = mask_tokens(ids, 1, 11, 0, pad_id=PAD, mask_prob=0.5)
    loss = model.mlm_loss(inputs, targets)
    assert loss.dtype == np.float32
    model.backward()
    assert float(np.abs(backend.to_numpy(model.embed.tok.weight.grad)).sum()) > 0
    loss = model.classify_loss(ids, backend.asarray(np.array([0, 2])))
    assert loss.dtype == np.float32 and model.classify(ids).dtype == np.float32
    model.backward()
    assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())


def test_config_and_input_errors_are_named():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        EncoderConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="positions must be one of"):
        EncoderConfig(positions="rope")
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderConfig(pooling="max")
    with pytest.raises(ValueError, match="pad_id"):
        EncoderConfig(vocab_size=4, pad_id=4)
    with pytest.raises(ValueError, match="unknown field"):
        EncoderConfig.from_dict({"n_layers": 2})
    with pytest.raises(ValueError, match="kernels must be one of"):
        EncoderConfig(kernels="turbo")
    model = Encoder(EncoderConfig(vocab_size=5, max_len=4, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="exceed max_len"):
        model.hidden_states(np.ones((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        model.hidden_states(np.array([[1, 7]]))
    with pytest.raises(TypeError, match="integer"):
        model.hidden_states(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="no classification head"):
        model.classify(np.ones((1, 3), dtype=np.int64))
    with pytest.raises(RuntimeError, match="call mlm_loss"):
        model.backward()
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(np.ones((1, 3), dtype=np.int64), 1, 5, 0, mask_prob=1.5)
