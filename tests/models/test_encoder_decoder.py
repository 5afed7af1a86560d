"""The encoder-decoder Transformer: whole-model gradient checks on padded, uneven batches, padding invariance,
causality of the decoder, the transformer-base preset, dtypes and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.models import EncoderDecoder, EncoderDecoderConfig
from npformer.train.schedules import inverse_sqrt

from ..helpers import PAD, padded_ids, randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, seeds, seq2seq_configs


def _batch(rng, config, B, S, T):
    """Padded, uneven source and target batches: tgt_out has a real token wherever tgt_in has one."""
    src, _ = padded_ids(rng, B, S, config.src_vocab_size)
    tgt_in, lengths = padded_ids(rng, B, T, config.tgt_vocab_size)
    tgt_out = rng.integers(1, config.tgt_vocab_size, size=(B, T))
    tgt_out[np.arange(T)[None, :] >= lengths[:, None]] = PAD
    return src, tgt_in, tgt_out, lengths


@given(seq2seq_configs(), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), seeds())
def test_whole_model_gradients_on_padded_batches(xp_backend, config, B, S, T, seed):
    """Every parameter's gradient (encoder, decoder, shared/tied tables) matches central differences in float64
    (normwise rel. error < 1e-6); the encoder's gradient is the sum over every decoder layer's cross-attention."""
    with backend.float64():
        model = EncoderDecoder(config)
        randomize_parameters(model, seed)
        src, tgt_in, tgt_out, _ = (backend.asarray(a) for a in _batch(np.random.default_rng(seed), config, B, S, T))

        def loss_fn():
            return model.loss(src, tgt_in, tgt_out)

        report = check_model(loss_fn, model.backward, model.named_parameters(), rtol=GRAD_RTOL, atol=GRAD_ATOL)
        assert report.passed, f"{config}\n{report}"


@given(seq2seq_configs(), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), seeds())
def test_extra_padding_changes_nothing_at_real_positions(xp_backend, config, B, S, T, extra, seed):
    """Appending pads to the source changes no logit; appending pads to the target changes no logit at a real
    target position; the loss is unchanged by either."""
    with backend.float64():
        model = EncoderDecoder(config)
        randomize_parameters(model, seed)
        src, tgt_in, tgt_out, lengths = _batch(np.random.default_rng(seed), config, B, S, T)
        more = np.full((B, extra), PAD)
        src_long = np.concatenate([src, more], axis=1)
        tgt_in_long, tgt_out_long = np.concatenate([tgt_in, more], axis=1), np.concatenate([tgt_out, more], axis=1)

        def logits(s, t):
            return backend.to_numpy(model.forward(backend.asarray(s), backend.asarray(t)))

        def loss(s, ti, to):
            return backend.to_float(model.loss(backend.asarray(s), backend.asarray(ti), backend.asarray(to)))

        base = logits(src, tgt_in)
        np.testing.assert_allclose(logits(src_long, tgt_in), base, rtol=1e-10, atol=1e-10)
        real = np.arange(T)[None, :] < lengths[:, None]
        np.testing.assert_allclose(logits(src, tgt_in_long)[:, :T][real], base[real], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(loss(src_long, tgt_in_long, tgt_out_long), loss(src, tgt_in, tgt_out),
                                   rtol=1e-10)


@given(seq2seq_configs(), st.integers(2, 5), st.data(), seeds())
def test_decoder_positions_do_not_see_later_targets(xp_backend, config, T, data, seed):
    """Changing target token j changes no logit at positions < j; it does change position j's (generically)."""
    j = data.draw(st.integers(1, T - 1))
    config = EncoderDecoderConfig.from_dict({**config.to_dict(), "n_embd": 4 * config.n_head, "ffn_kind": "gelu"})
    with backend.float64():
        model = EncoderDecoder(config)
        randomize_parameters(model, seed)
        rng = np.random.default_rng(seed)
        src = backend.asarray(rng.integers(1, config.src_vocab_size, size=(1, 3)))
        tgt = rng.integers(1, config.tgt_vocab_size, size=(1, T))
        other = tgt.copy()
        other[0, j] = 1 + tgt[0, j] % (config.tgt_vocab_size - 1)
        a = backend.to_numpy(model.forward(src, backend.asarray(tgt)))
        b = backend.to_numpy(model.forward(src, backend.asarray(other)))
        np.testing.assert_allclose(b[0, :j], a[0, :j], rtol=1e-12, atol=1e-12)
        assert np.abs(b[0, j] - a[0, j]).max() > 1e-8


@given(seq2seq_configs(), seeds())
def test_every_target_position_sees_the_whole_source(xp_backend, config, seed):
    """Cross-attention is not causal: changing the last source token changes the logits at target position 0."""
    config = EncoderDecoderConfig.from_dict({**config.to_dict(), "n_embd": 4 * config.n_head, "ffn_kind": "gelu"})
    with backend.float64():
        model = EncoderDecoder(config)
        randomize_parameters(model, seed)
        rng = np.random.default_rng(seed)
        src = rng.integers(1, config.src_vocab_size, size=(1, 4))
        other = src.copy()
        other[0, -1] = 1 + src[0, -1] % (config.src_vocab_size - 1)
        tgt = backend.asarray(rng.integers(1, config.tgt_vocab_size, size=(1, 2)))
        a = backend.to_numpy(model.forward(backend.asarray(src), tgt))
        b = backend.to_numpy(model.forward(backend.asarray(other), tgt))
        assert np.abs(b[0, 0] - a[0, 0]).max() > 1e-8


def test_transformer_base_preset_has_the_papers_choices():
    cfg = EncoderDecoderConfig.preset("transformer-base")
    assert (cfg.norm_placement, cfg.positions, cfg.ffn_kind, cfg.n_encoder_layer, cfg.n_decoder_layer,
            cfg.n_embd, cfg.n_head, cfg.ffn_hidden, cfg.dropout, cfg.label_smoothing) == (
        "post", "sinusoidal", "relu", 6, 6, 512, 8, 2048, 0.1, 0.1)
    assert cfg.share_embeddings and cfg.tie_output and cfg.scale_embeddings
    # the paper's schedule: peak lr = 512^-0.5 * 4000^-0.5 ~ 7e-4 at the end of warmup
    schedule = inverse_sqrt(cfg.n_embd, 4000)
    assert abs(schedule(3999) - 512**-0.5 * 4000**-0.5) < 1e-12
    # a cut-down build of it: one shared table, tied output, post-LN (no final norms)
    small = EncoderDecoderConfig.preset("transformer-base", src_vocab_size=11, n_encoder_layer=1,
                                        n_decoder_layer=1, n_embd=16, n_head=2, ffn_hidden=32)
    assert small.tgt_vocab_size == 11
    model = EncoderDecoder(small)
    names = dict(model.named_parameters())
    assert "tgt_embed.tok.weight" not in names and "out_proj" not in names and "dec_norm_f.weight" not in names
    assert model.tgt_embed.tok.weight is model.encoder.embed.tok.weight
    with pytest.raises(ValueError, match="unknown preset"):
        EncoderDecoderConfig.preset("transformer-big")


def test_float32_stays_float32_and_dropout_trains():
    cfg = EncoderDecoderConfig(src_vocab_size=9, tgt_vocab_size=7, max_len=6, n_encoder_layer=1,
                               n_decoder_layer=2, n_head=2, n_embd=8, dropout=0.2, label_smoothing=0.1)
    model = EncoderDecoder(cfg)
    rng = np.random.default_rng(0)
    src, tgt_in, tgt_out, _ = (backend.asarray(a) for a in _batch(rng, cfg, 3, 5, 4))
    loss = model.loss(src, tgt_in, tgt_out)
    assert loss.dtype == np.float32 and np.isfinite(backend.to_float(loss))
    model.backward()
    assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())
    assert float(np.abs(backend.to_numpy(model.encoder.embed.tok.weight.grad)).sum()) > 0


def test_config_and_input_errors_are_named():
    with pytest.raises(ValueError, match="share_embeddings needs equal vocabularies"):
        EncoderDecoderConfig(src_vocab_size=5, tgt_vocab_size=6, share_embeddings=True)
    with pytest.raises(ValueError, match="label_smoothing"):
        EncoderDecoderConfig(label_smoothing=1.5)
    with pytest.raises(ValueError, match="pad_id"):
        EncoderDecoderConfig(src_vocab_size=5, tgt_vocab_size=3, pad_id=4)
    with pytest.raises(ValueError, match="unknown field"):
        EncoderDecoderConfig.from_dict({"n_layer": 2})
    with pytest.raises(ValueError, match="kernels must be one of"):
        EncoderDecoderConfig(kernels="turbo")
    model = EncoderDecoder(EncoderDecoderConfig(src_vocab_size=5, tgt_vocab_size=4, max_len=4, n_encoder_layer=1,
                                                n_decoder_layer=1, n_head=1, n_embd=4))
    src = np.array([[1, 2]])
    with pytest.raises(ValueError, match="out of range"):
        model.forward(src, np.array([[1, 4]]))
    with pytest.raises(ValueError, match="tgt_out shape"):
        model.loss(src, np.array([[1, 2]]), np.array([[1, 2, 3]]))
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()


def test_unsigned_token_ids_give_the_same_loss():
    """uint8 ids (as a compact dataset might store them) must not wrap the ignore index into a real class."""
    cfg = EncoderDecoderConfig(src_vocab_size=9, tgt_vocab_size=7, max_len=6, n_encoder_layer=1,
                               n_decoder_layer=1, n_head=2, n_embd=8)
    model = EncoderDecoder(cfg)
    src, tgt_in, tgt_out, _ = _batch(np.random.default_rng(1), cfg, 3, 5, 4)
    assert (np.asarray(tgt_out) == PAD).any()  # the case that matters: padded targets
    losses = [backend.to_float(model.loss(*(backend.asarray(np.asarray(a).astype(dt)) for a in (src, tgt_in, tgt_out))))
              for dt in (np.int64, np.uint8)]
    assert losses[0] == losses[1]
