"""The inspection tools on a ViT (its images in place of token ids) and on a sliding-window GPT: the maps are the
probabilities the model's own kernel kept, rows are distributions over the class token and the patches, the
window shows as zeros, and a capture leaves the model as it found it."""

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.inspect import attention_maps, block_activations, capture_forward, head_summary
from npformer.models import GPT, GPTConfig, ViT, ViTConfig

from ..helpers import randomize_parameters
from ..strategies import normal_array


@st.composite
def small_vits(draw):
    patch = draw(st.integers(1, 2))
    n_head = draw(st.integers(1, 2))
    return ViTConfig(image_size=patch * draw(st.integers(1, 3)), patch_size=patch, in_channels=draw(st.integers(1, 2)),
                     n_classes=3, n_layer=draw(st.integers(1, 2)), n_head=n_head, n_embd=4 * n_head, ffn_hidden=8,
                     norm_placement=draw(st.sampled_from(["pre", "post"])),
                     attn_impl=draw(st.sampled_from(["plain", "flash"])),
                     kernels=draw(st.sampled_from([None, "reference", "fast"])), seed=draw(st.integers(0, 50)))


@given(cfg=small_vits(), seed=st.integers(0, 100))
def test_vit_maps_are_the_kernels_probabilities(cfg, seed):
    """(L, B, H, T, T) with T = patches + 1, equal to the P the reference plain kernel keeps in a normal forward,
    each row a distribution; host images work on either backend."""
    images = normal_array(seed, (2, cfg.in_channels, cfg.image_size, cfg.image_size))
    reference = randomize_parameters(ViT(dataclasses.replace(cfg, attn_impl="plain", kernels="reference")), seed)
    reference.hidden_states(images)
    kept = [backend.to_numpy(block.attn._cache[0].softmax.y) for block in reference.blocks]
    model = ViT(cfg)  # the drawn kernel path and tier, the same weights
    model.load_state_dict(reference.state_dict())
    model.train()
    maps = attention_maps(model, images)
    T = cfg.n_patches + 1
    assert isinstance(maps, np.ndarray) and maps.shape == (cfg.n_layer, 2, cfg.n_head, T, T)
    for layer, p in enumerate(kept):
        np.testing.assert_allclose(maps[layer], p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    # the model is as it was: training mode, no hooks, no caches
    assert all(m.training for m in model.modules())
    assert all(getattr(m, "capture", None) is None for m in model.modules())
    assert all(block.attn._cache is None for block in model.blocks)


def test_vit_block_activations_and_head_summary(xp_backend):
    cfg = ViTConfig(image_size=4, patch_size=2, n_classes=3, n_layer=2, n_head=2, n_embd=8, ffn_hidden=8)
    model = randomize_parameters(ViT(cfg), 1)
    images = np.random.default_rng(0).random((3, 4, 4))  # (B, H, W): one channel, on the host
    cap = capture_forward(model, images)
    assert cap.stacks == ("encoder",) and cap.attention["encoder"].shape == (2, 3, 2, 5, 5)
    blocks = block_activations(model, images)["encoder"]
    np.testing.assert_allclose(blocks[0].output, blocks[1].input)  # each block's output feeds the next
    hidden = backend.to_numpy(model.hidden_states(images))
    model.drop_caches()
    last = backend.asarray(blocks[-1].output)
    # pre-LN (the default): the stack's hidden states are norm_f of the last block's output
    np.testing.assert_allclose(backend.to_numpy(model.norm_f.forward(last)), hidden, rtol=1e-5, atol=1e-6)
    model.drop_caches()
    summary = head_summary(cap.attention["encoder"])
    assert np.isfinite(np.asarray(summary.entropy)).all()


def test_sliding_window_gpt_maps_are_zero_outside_the_window(xp_backend):
    """A GPT with window W: each query's row is a distribution over its last W positions, zero elsewhere."""
    W, T = 3, 8
    cfg = GPTConfig(vocab_size=7, block_size=T, n_layer=2, n_head=2, n_embd=8, window=W, positions="rope")
    model = randomize_parameters(GPT(cfg), 2)
    maps = attention_maps(model, np.random.default_rng(0).integers(0, 7, (2, T)))
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    inside = (j <= i) & (j > i - W)
    assert (maps[..., ~inside] == 0).all()
    assert (maps[..., inside] > 0).all()
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
