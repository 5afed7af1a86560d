"""Training paths through the fast tier: the chunked LM head gives a GPT the loss and gradients of the plain head;
a float32 training step produces float32 everywhere (activations, caches, loss, gradients, optimizer state); flat
parameter buffers train exactly like separate ones."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.models import GPT, GPTConfig
from npformer.train.optim import AdamW, clip_grad_norm, param_groups

from ..strategies import seeds


@pytest.mark.parametrize("tie", [True, False])
@given(seed=seeds(), chunk=st.integers(1, 9))
def test_gpt_fused_loss_equals_plain(tie, seed, chunk):
    """GPTConfig.loss_chunk > 0 (the chunked LM head + loss) gives the same loss and gradients as the plain path."""
    rng = np.random.default_rng(seed)
    idx, tgt = rng.integers(0, 11, size=(2, 4)), rng.integers(0, 11, size=(2, 4))
    tgt[0, 1] = -100  # an ignored position
    results = []
    with backend.float64():
        for loss_chunk in (0, chunk):
            model = GPT(GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=2, n_embd=8, tie_embeddings=tie,
                                  loss_chunk=loss_chunk, seed=seed % 100))
            loss = model.loss(idx, tgt)
            model.backward()
            results.append((backend.to_float(loss), {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-12)
    for name, g in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], g, rtol=1e-9, atol=1e-12, err_msg=name)


def _float_arrays(obj):
    """Every float array inside a cache (NamedTuple / tuple / list / dict), recursively."""
    if hasattr(obj, "dtype") and hasattr(obj, "shape"):
        if np.dtype(obj.dtype).kind == "f":
            yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _float_arrays(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _float_arrays(item)


@pytest.mark.parametrize("options", [dict(), dict(loss_chunk=5, ffn_kind="swiglu", norm="rmsnorm", positions="rope",
                                                  tie_embeddings=False, dropout=0.1),
                                     dict(attn_impl="flash", positions="sinusoidal", norm_placement="post")])
def test_float32_training_step_stays_float32(options):
    """No silent float64 anywhere in a float32 step: activations and every cache, logits, loss, gradients,
    optimizer buffers and the updated parameters."""
    model = GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8, **options))
    opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-3)
    rng = np.random.default_rng(0)
    idx, tgt = backend.asarray(rng.integers(0, 13, size=(3, 6))), backend.asarray(rng.integers(0, 13, size=(3, 6)))
    assert model.forward(idx).dtype == np.float32
    loss = model.loss(idx, tgt)
    assert loss.dtype == np.float32
    caches = [getattr(m, name) for m in model.modules() for name in m.caches]
    assert model._cache_loss is not None  # the loss's own cache is among them
    found = list(_float_arrays(caches))
    assert found, "the forward left no float arrays in any cache"
    assert all(a.dtype == np.float32 for a in found), sorted({str(a.dtype) for a in found})
    model.backward()
    clip_grad_norm(model.parameters(), 1.0)
    opt.step()
    for name, p in model.named_parameters():
        assert p.data.dtype == p.grad.dtype == np.float32, name
    for pname, bufs in opt.state.items():
        for b, arr in bufs.items():
            assert arr.dtype == np.float32, f"{b}/{pname}"


@pytest.mark.parametrize("when", ["before_optimizer", "after_optimizer"])
@given(seed=seeds(), clip=st.sampled_from([1e-3, 10.0]))
def test_flat_parameters_train_exactly_like_separate_ones(when, seed, clip):
    """flatten_parameters changes where parameters live, not what a step computes: AdamW on the flat buffers
    (a few whole-group passes) gives bit-identical parameters and optimizer state; grad_norm over one buffer is
    one dot product instead of a sum of dots, so when clipping scales the gradients they agree to rounding."""
    from npformer.train.optim import grad_norm

    rng = np.random.default_rng(seed)
    idx, tgt = rng.integers(0, 11, size=(2, 5)), rng.integers(0, 11, size=(2, 5))
    runs = []
    for flat in (False, True):
        model = GPT(GPTConfig(vocab_size=11, block_size=5, n_layer=2, n_head=2, n_embd=8, tie_embeddings=False,
                              seed=seed % 100))
        before = {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters()}
        if flat and when == "before_optimizer":
            assert model.flatten_parameters() == model.num_parameters()
        opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-2, betas=(0.9, 0.99))
        if flat and when == "after_optimizer":
            model.flatten_parameters()
        if flat:
            for n, p in model.named_parameters():
                np.testing.assert_array_equal(backend.to_numpy(p.data), before[n])
            assert all(opt._flat_spans(gi, g) is not None for gi, g in enumerate(opt.param_groups))
        norms = []
        for _ in range(3):
            model.zero_grad()
            model.loss(idx, tgt)
            model.backward()
            norms.append(backend.to_float(grad_norm(model.parameters())))
            clip_grad_norm(model.parameters(), clip)
            opt.step()
        runs.append((norms, {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters()},
                     opt.state_dict()))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    clipped = min(runs[0][0]) > clip
    arrays = [(name, runs[1][1][name], value) for name, value in runs[0][1].items()]
    arrays += [(key, runs[1][2][key], value) for key, value in runs[0][2].items() if isinstance(value, np.ndarray)]
    for name, got, want in arrays:
        if clipped:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_flatten_parameters_refuses_mixed_dtypes():
    model = GPT(GPTConfig(vocab_size=5, block_size=2, n_layer=1, n_head=1, n_embd=4))
    model.wte.weight.data = model.wte.weight.data.astype(np.float64)
    with pytest.raises(ValueError, match="^flatten_parameters: .*several dtypes"):
        model.flatten_parameters()
