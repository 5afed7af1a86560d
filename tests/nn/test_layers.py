"""Every layer's backward against finite differences (float64), in either kernel tier, with every parameter
drawn at random (tests/helpers.randomize_parameters); plus layer-level properties and errors.
(Module's own machinery, state dicts and caches, is in test_module.py.)"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_layer, check_model
from npformer.kernels import KERNEL_TIERS, use_kernels
from npformer.nn import (
    Embedding,
    FeedForward,
    LayerNorm,
    Linear,
    MultiHeadAttention,
    RMSNorm,
    TransformerBlock,
    padding_mask,
)

from ..helpers import randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, dims, normal_array, seeds

# Tolerance: normwise relative error of every gradient below GRAD_RTOL = 1e-6 (float64, eps = 1e-6).
TOL = dict(rtol=GRAD_RTOL, atol=GRAD_ATOL)


def _x(seed, *shape):
    return backend.asarray(normal_array(seed, shape))


def tiers():
    return st.sampled_from(KERNEL_TIERS)


@given(seeds(), dims(), dims(), dims(), st.booleans(), tiers())
def test_linear_gradients(xp_backend, seed, B, c_in, c_out, bias, tier):
    with backend.float64(), use_kernels(tier):
        layer = randomize_parameters(Linear(c_in, c_out, bias=bias), seed)  # the bias too, not its zeros
        check_layer(layer, _x(seed, B, 2, c_in), **TOL).assert_ok()


@given(seeds(), dims(1, 6), dims(1, 4), dims(1, 3), dims(1, 3), tiers())
def test_embedding_gradient_accumulates_repeats(xp_backend, seed, V, C, B, T, tier):
    with backend.float64(), use_kernels(tier):
        layer = randomize_parameters(Embedding(V, C), seed)
        ids = backend.asarray(np.random.default_rng(seed).integers(0, V, size=(B, T)))
        dy = backend.asarray(normal_array(seed + 1, (B, T, C)))
        check_model(lambda: (layer.forward(ids) * dy).sum(), lambda: layer.backward(dy),
                    layer.named_parameters(), **TOL).assert_ok()


@given(seeds(), dims(), dims(2, 6), st.sampled_from(["layer", "rms"]), st.booleans(), tiers())
def test_norm_layers(xp_backend, seed, B, C, kind, bias, tier):
    with backend.float64(), use_kernels(tier):
        layer = LayerNorm(C, bias=bias) if kind == "layer" else RMSNorm(C)
        randomize_parameters(layer, seed)  # not the trivial ones/zeros, and w != b, so a wrong dw/db term shows
        check_layer(layer, _x(seed, B, 3, C), **TOL).assert_ok()


@given(seeds(), dims(), dims(1, 3), dims(1, 4), st.sampled_from(["relu", "gelu", "swiglu"]), st.booleans(),
       tiers())
def test_feedforward(xp_backend, seed, B, T, C, kind, bias, tier):
    with backend.float64(), use_kernels(tier):
        layer = randomize_parameters(FeedForward(C, 3, kind=kind, bias=bias), seed)
        check_layer(layer, _x(seed, B, T, C), **TOL).assert_ok()


def _heads(data):
    Hkv = data.draw(dims(1, 2), label="Hkv")
    H = Hkv * data.draw(dims(1, 2), label="group")
    D = data.draw(st.sampled_from([2, 4]), label="D")
    return H, Hkv, D


@given(st.data(), seeds(), dims(1, 2), dims(1, 4), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_self_attention(xp_backend, data, seed, B, T, causal, rope, bias, pad):
    H, Hkv, D = _heads(data)
    C = H * D
    with backend.float64(), use_kernels(data.draw(tiers(), label="tier")):
        layer = MultiHeadAttention(C, H, Hkv, bias=bias, rope=rope,
                                   impl=data.draw(st.sampled_from(["plain", "flash"]), label="impl"))
        randomize_parameters(layer, seed, scale=0.4)
        mask = None
        if pad:
            valid = np.ones((B, T), dtype=bool)
            valid[:, T - 1:] = T == 1  # pad the last key unless it is the only one
            mask = backend.asarray(padding_mask(valid))
        check_layer(layer, _x(seed, B, T, C), mask=mask, causal=causal, **TOL).assert_ok()


class _CrossWrap:
    """Adapts cross-attention (two float inputs, returns (dx, dcontext)) to check_layer's protocol."""

    def __init__(self, layer, mask):
        self.layer, self.mask = layer, mask

    def named_parameters(self):
        return self.layer.named_parameters()

    def forward(self, x, context):
        return self.layer.forward(x, context=context, mask=self.mask)

    def backward(self, dy):
        return self.layer.backward(dy)


@given(st.data(), seeds(), dims(1, 2), dims(1, 3), dims(1, 4))
def test_cross_attention(xp_backend, data, seed, B, T, S):
    H, Hkv, D = _heads(data)
    C = H * D
    with backend.float64(), use_kernels(data.draw(tiers(), label="tier")):
        layer = MultiHeadAttention(C, H, Hkv, cross=True, context_dim=C + 1,
                                   impl=data.draw(st.sampled_from(["plain", "flash"]), label="impl"))
        randomize_parameters(layer, seed, scale=0.4)
        valid = np.ones((B, S), dtype=bool)
        valid[0, 1:] = False  # the first sequence's context has one real token
        wrap = _CrossWrap(layer, backend.asarray(padding_mask(valid)))
        check_layer(wrap, _x(seed, B, T, C), _x(seed + 1, B, S, C + 1), **TOL).assert_ok()


@given(st.data(), seeds(), dims(1, 2), dims(1, 3), st.sampled_from(["pre", "post"]),
       st.sampled_from(["layernorm", "rmsnorm"]), st.sampled_from(["relu", "gelu", "swiglu"]), st.booleans(),
       st.booleans())
def test_transformer_block(xp_backend, data, seed, B, T, placement, norm, ffn, rope, causal):
    H, Hkv, D = _heads(data)
    C = H * D
    with backend.float64(), use_kernels(data.draw(tiers(), label="tier")):
        block = TransformerBlock(C, H, Hkv, ffn_hidden=5, ffn_kind=ffn, norm=norm, placement=placement,
                                 rope=rope, causal=causal, rng=seed)
        randomize_parameters(block, seed, scale=0.4)
        check_layer(block, _x(seed, B, T, C), **TOL).assert_ok()


@given(st.data(), seeds(), dims(1, 2), dims(1, 3), dims(1, 3), st.sampled_from(["pre", "post"]))
def test_decoder_block_with_cross_attention(xp_backend, data, seed, B, T, S, placement):
    H, Hkv, D = _heads(data)
    C = H * D
    with backend.float64(), use_kernels(data.draw(tiers(), label="tier")):
        block = TransformerBlock(C, H, Hkv, ffn_hidden=4, placement=placement, causal=True,
                                 cross_attention=True, rng=seed)
        randomize_parameters(block, seed, scale=0.4)

        class Wrap:
            named_parameters = block.named_parameters

            def forward(self, x, ctx):
                return block.forward(x, context=ctx)

            def backward(self, dy):
                return block.backward(dy)

        check_layer(Wrap(), _x(seed, B, T, C), _x(seed + 1, B, S, C), **TOL).assert_ok()


def test_layer_errors():
    with pytest.raises(ValueError, match="do not divide"):
        MultiHeadAttention(8, 4, 3)
    with pytest.raises(ValueError, match="even head size"):
        MultiHeadAttention(6, 2, rope=True)
    with pytest.raises(ValueError, match="feed-forward kind"):
        FeedForward(4, 4, kind="tanh")
    with pytest.raises(ValueError, match="placement"):
        TransformerBlock(4, 1, placement="middle")


def test_float32_layers_stay_float32():
    block = TransformerBlock(8, 2, 1, ffn_kind="swiglu", rope=True, causal=True)
    x = backend.asarray(normal_array(0, (2, 3, 8)), dtype=np.float32)
    y = block.forward(x)
    assert y.dtype == np.float32
    dx = block.backward(backend.xp().ones_like(y))
    assert dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in block.parameters())


def test_rope_with_cache_needs_positions_and_batches_must_match():
    class Cache:
        def update(self, k, v):
            return k, v

    layer = MultiHeadAttention(8, 2, rope=True)
    with pytest.raises(ValueError, match="pass the new tokens' positions"):
        layer.forward(backend.asarray(np.zeros((1, 1, 8), np.float32)), kv_cache=Cache())
    cross = MultiHeadAttention(8, 2, cross=True)
    with pytest.raises(ValueError, match="context batch 3 != query batch 2"):
        cross.forward(backend.asarray(np.zeros((2, 1, 8), np.float32)),
                      context=backend.asarray(np.zeros((3, 4, 8), np.float32)))
