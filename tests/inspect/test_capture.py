"""Capture: the attention probabilities are the ones the model's own plain kernel keeps (whatever kernel it trains
with), they are probabilities under the model's masks, block activations chain into the model's hidden states,
and a capture leaves the model as it found it: training mode, no hooks, no caches."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.functional.norms import layernorm_forward, rmsnorm_forward
from npformer.inspect import attention_maps, block_activations, capture_forward
from npformer.models import GPT, Encoder, EncoderDecoder, EncoderDecoderConfig, GPTConfig

from ..helpers import allowed_matrix, padded_ids, randomize_parameters
from ..strategies import encoder_configs, gpt_configs, seq2seq_configs


def kernel_probabilities(model_cls, cfg, run):
    """P of every attention layer as the reference plain kernel kept it in its cache during a normal forward."""
    model = model_cls(dataclasses.replace(cfg, attn_impl="plain", kernels="reference", dropout=0.0))
    randomize_parameters(model, 3)
    run(model)
    found = {}
    for m in model.modules():
        if type(m).__name__ == "MultiHeadAttention":
            found[id(m)] = backend.to_numpy(m._cache[0].softmax.y)
    return model, found


@given(cfg=gpt_configs(max_block=6, attn_impls=("plain", "flash")), seed=st.integers(0, 100))
def test_gpt_maps_are_the_kernels_probabilities(cfg, seed):
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, cfg.block_size))
    reference, kept = kernel_probabilities(GPT, cfg, lambda m: m.hidden_states(ids))
    model = GPT(cfg)  # the drawn attention path and kernel tier, the same weights
    model.load_state_dict(reference.state_dict())
    maps = attention_maps(model, ids)
    L, B, H, T = cfg.n_layer, 2, cfg.n_head, cfg.block_size
    assert isinstance(maps, np.ndarray) and maps.shape == (L, B, H, T, T)
    for l, block in enumerate(reference.blocks):
        np.testing.assert_allclose(maps[l], kept[id(block.attn)], rtol=1e-5, atol=1e-6)
    causal = allowed_matrix(B, H, T, T, None, causal=True)
    assert (maps[:, ~causal] == 0).all()  # nothing above the diagonal
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)


@given(cfg=encoder_configs(n_classes=0), seed=st.integers(0, 100))
def test_encoder_maps_mask_the_padding(cfg, seed):
    ids, lengths = padded_ids(np.random.default_rng(seed), 3, 6, cfg.vocab_size)
    maps = attention_maps(Encoder(cfg), ids)
    assert maps.shape == (cfg.n_layer, 3, cfg.n_head, 6, 6)
    for b, n in enumerate(lengths):
        assert (maps[:, b, :, :, n:] == 0).all()  # no query looks at padding
        np.testing.assert_allclose(maps[:, b].sum(-1), 1.0, rtol=1e-5)


@given(cfg=seq2seq_configs(), seed=st.integers(0, 100))
def test_encoder_decoder_maps(cfg, seed):
    rng = np.random.default_rng(seed)
    src, src_len = padded_ids(rng, 2, 5, cfg.src_vocab_size)
    tgt = rng.integers(1, cfg.tgt_vocab_size, (2, 4))

    def run(model):
        memory, cmask = model.encode(src)
        model.decode(tgt, memory, cmask)

    reference, kept = kernel_probabilities(EncoderDecoder, cfg, run)
    model = EncoderDecoder(cfg)
    model.load_state_dict(reference.state_dict())
    maps = attention_maps(model, src, tgt)
    assert maps["encoder"].shape == (cfg.n_encoder_layer, 2, cfg.n_head, 5, 5)
    assert maps["decoder"].shape == (cfg.n_decoder_layer, 2, cfg.n_head, 4, 4)
    assert maps["cross"].shape == (cfg.n_decoder_layer, 2, cfg.n_head, 4, 5)
    for l, block in enumerate(reference.dec_blocks):
        np.testing.assert_allclose(maps["decoder"][l], kept[id(block.attn)], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(maps["cross"][l], kept[id(block.cross)], rtol=1e-5, atol=1e-6)
    for l, block in enumerate(reference.encoder.blocks):
        np.testing.assert_allclose(maps["encoder"][l], kept[id(block.attn)], rtol=1e-5, atol=1e-6)
    for b, n in enumerate(src_len):
        assert (maps["cross"][:, b, :, :, n:] == 0).all()


def test_encoder_decoder_needs_both_inputs():
    with pytest.raises(ValueError, match="needs the decoder's input too"):
        attention_maps(EncoderDecoder(EncoderDecoderConfig()), np.ones((1, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="takes one input"):
        attention_maps(GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)),
                       np.ones((1, 3), dtype=np.int64), np.ones((1, 3), dtype=np.int64))


@given(cfg=gpt_configs(max_block=6))
def test_block_activations_chain_into_the_hidden_states(cfg):
    """Each block's output is the next one's input; the norms' outputs are their inputs normalised with the
    norms' own weights; the last output, through the final norm, is what hidden_states returns."""
    cfg = dataclasses.replace(cfg, dropout=0.0)
    model = randomize_parameters(GPT(cfg), 1)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, cfg.block_size))
    blocks = block_activations(model, ids)["decoder"]
    assert len(blocks) == cfg.n_layer
    for before, after in zip(blocks, blocks[1:]):
        np.testing.assert_array_equal(before.output, after.input)
    for block, layer in zip(blocks, model.blocks):
        assert list(block.norms) == ["norm1", "norm2"]
        for name, (x, y) in block.norms.items():
            norm = getattr(layer, name)
            w = backend.to_numpy(norm.weight.data)
            if cfg.norm == "layernorm":
                b = backend.to_numpy(norm.bias.data) if norm.bias is not None else np.zeros_like(w)
                expected, _ = layernorm_forward(x, w, b, norm.eps)
            else:
                expected, _ = rmsnorm_forward(x, w, norm.eps)
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    last = blocks[-1].output
    if model.norm_f is not None:
        last = backend.to_numpy(model.norm_f.forward(backend.asarray(last)))
    np.testing.assert_allclose(last, backend.to_numpy(model.hidden_states(ids)), rtol=1e-4, atol=1e-5)


def test_capture_leaves_the_model_as_it_was():
    model = GPT(GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8, dropout=0.2))
    model.train()
    model.blocks[1].eval()
    ids = np.zeros((1, 5), dtype=np.int64)
    first = capture_forward(model, ids)
    assert model.training and model.blocks[0].training and not model.blocks[1].training
    for m in model.modules():
        assert getattr(m, "capture", None) is None
        for attr in m.caches:
            assert getattr(m, attr) is None, (type(m).__name__, attr)
    again = capture_forward(model, ids)  # eval mode inside: no dropout, so the same maps twice
    np.testing.assert_array_equal(first.attention["decoder"], again.attention["decoder"])


def test_device_models_take_host_ids_and_give_host_maps(xp_backend):
    model = GPT(GPTConfig(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8))
    ids = np.arange(10).reshape(2, 5) % 7
    cap = capture_forward(model, ids)
    assert type(cap.attention["decoder"]) is np.ndarray and cap.attention["decoder"].shape == (2, 2, 2, 5, 5)
    assert type(cap.blocks["decoder"][0].norms["norm1"][1]) is np.ndarray
