"""Whole models (GPT, Encoder, EncoderDecoder), fast tier against reference tier: the same loss and every
parameter's gradient, in float64, across the models' option space (drawn configs, every parameter with its own
random values, dropout included: the masks come from the same seeds in both tiers)."""

import collections

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.kernels import FAST_OPS, dispatch
from npformer.models import GPT, Encoder, EncoderDecoder

from ..helpers import padded_ids, randomize_parameters
from ..strategies import encoder_configs, gpt_configs, seeds, seq2seq_configs
from .equality import assert_equal


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of each fast op's implementation, per tier: a comparison of two runs that both went
    through the same tier would prove nothing."""
    counts = collections.Counter()
    for tier in ("fast", "reference"):
        for name in FAST_OPS:
            real = dispatch._TABLES[tier][name]
            monkeypatch.setitem(dispatch._TABLES[tier], name,
                                lambda *a, _real=real, _key=(tier, name), **k: counts.update([_key]) or _real(*a, **k))
    return counts


def loss_and_grads(model_cls, config, kernels, seed, run):
    config.kernels = kernels
    with backend.float64():
        model = model_cls(config)
    randomize_parameters(model, seed)
    loss = run(model)
    model.backward(0.7)
    return backend.to_numpy(loss), {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}


def assert_tiers_agree(calls, model_cls, config, seed, run):
    calls.clear()
    fast = loss_and_grads(model_cls, config, "fast", seed, run)
    fast_calls = {op for tier, op in calls if tier == "fast"}
    assert fast_calls and not any(tier == "reference" for tier, _ in calls), dict(calls)
    calls.clear()
    ref = loss_and_grads(model_cls, config, "reference", seed, run)
    assert not any(tier == "fast" for tier, _ in calls), dict(calls)
    assert {op for _, op in calls} == fast_calls  # the same ops ran, each in its own tier
    assert_equal("loss", fast[0], ref[0], np.float64)
    assert fast[1].keys() == ref[1].keys()
    for name in ref[1]:
        assert_equal(name, fast[1][name], ref[1][name], np.float64)


@given(cfg=gpt_configs(attn_impls=("plain", "flash")), seed=seeds(), B=st.integers(1, 3),
       loss_chunk=st.sampled_from([0, 1, 3]), data=st.data())
def test_gpt(calls, cfg, seed, B, loss_chunk, data):
    cfg.loss_chunk = loss_chunk
    T = data.draw(st.integers(1, cfg.block_size))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, cfg.vocab_size, size=(B, T))
    targets = rng.integers(0, cfg.vocab_size, size=(B, T))
    targets[rng.random((B, T)) < 0.2] = -100  # some ignored positions
    assert_tiers_agree(calls, GPT, cfg, seed, lambda m: m.loss(backend.asarray(idx), backend.asarray(targets)))


@given(cfg=encoder_configs(), seed=seeds(), task=st.sampled_from(["mlm", "classify"]))
def test_encoder(calls, cfg, seed, task):
    rng = np.random.default_rng(seed)
    ids, _ = padded_ids(rng, 3, cfg.max_len, cfg.vocab_size)
    if task == "mlm":
        targets = np.where(rng.random(ids.shape) < 0.5, ids, -100)
        run = lambda m: m.mlm_loss(ids, targets)  # noqa: E731
    else:
        labels = rng.integers(0, cfg.n_classes, 3)
        run = lambda m: m.classify_loss(ids, labels)  # noqa: E731
    assert_tiers_agree(calls, Encoder, cfg, seed, run)


@given(cfg=seq2seq_configs(), seed=seeds())
def test_encoder_decoder(calls, cfg, seed):
    rng = np.random.default_rng(seed)
    src, _ = padded_ids(rng, 2, cfg.max_len, cfg.src_vocab_size)
    tgt, _ = padded_ids(rng, 2, cfg.max_len, cfg.tgt_vocab_size)
    assert_tiers_agree(calls, EncoderDecoder, cfg, seed, lambda m: m.loss(src, tgt[:, :-1], tgt[:, 1:]))
