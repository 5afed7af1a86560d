"""The fast paths behind the functional API: blockwise kernels (GELU, LayerNorm) equal the plain formulas for any
block size and thread count; the fused LM-head loss gives the GPT the same loss and gradients; a float32
training step produces float32 everywhere (activations, caches, loss, gradients, optimizer state)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer import functional as F
from npformer.models import GPT, GPTConfig
from npformer.optim import AdamW, clip_grad_norm, param_groups

from .strategies import TOL, normal_array, seeds, shapes

K, CUBIC = math.sqrt(2.0 / math.pi), 0.044715


@pytest.fixture(params=[(None, None), (7, 1), (7, 2), (64, 3)], ids=["default", "blocks1", "blocks2", "blocks3"])
def blocking(request, monkeypatch):
    """Run with the default blocking, and with tiny blocks on 1, 2 or 3 threads (every job then splits)."""
    block, threads = request.param
    if block is not None:
        monkeypatch.setattr(backend, "BLOCK_ELEMENTS", block)
        monkeypatch.setattr(backend, "PARALLEL_MIN_ELEMENTS", 1)
        monkeypatch.setenv("NPFORMER_NUM_THREADS", str(threads))
    return request.param


def gelu_tanh_plain(x):
    return 0.5 * x * (1.0 + np.tanh(K * (x + CUBIC * x * x * x)))


def gelu_tanh_grad_plain(x):
    t = np.tanh(K * (x + CUBIC * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * CUBIC * x * x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes(min_dims=1, max_dims=3, max_side=9), seed=seeds(), transpose=st.booleans())
def test_gelu_tanh_equals_plain_formula(blocking, dtype, shape, seed, transpose):
    x = normal_array(seed, shape, dtype, scale=2.0)
    if transpose:
        x = x.T  # non-contiguous input
    dy = normal_array(seed + 1, x.shape, dtype)
    y, cache = F.gelu_forward(backend.asarray(x))
    dx = F.gelu_backward(backend.asarray(dy), cache)
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == x.shape
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(backend.to_numpy(y), gelu_tanh_plain(x), rtol=rtol, atol=atol)
    np.testing.assert_allclose(backend.to_numpy(dx), dy * gelu_tanh_grad_plain(x), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes(min_dims=1, max_dims=3, max_side=9), seed=seeds())
def test_layernorm_equals_plain_formula(blocking, dtype, shape, seed):
    x = normal_array(seed, shape, dtype, scale=3.0)
    C = shape[-1]
    w, b = normal_array(seed + 1, (C,), dtype), normal_array(seed + 2, (C,), dtype)
    dy = normal_array(seed + 3, shape, dtype)
    y, cache = F.layernorm_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b))
    dx, dw, db = F.layernorm_backward(backend.asarray(dy), cache)
    # the plain formulas, whole arrays at once
    mean = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    xhat = (x - mean) * rstd
    dxhat = dy * w
    ref_dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    rtol, atol = TOL[np.dtype(dtype)]
    for got, ref in ((y, xhat * w + b), (dx, ref_dx), (dw, (dy * xhat).reshape(-1, C).sum(0)),
                     (db, dy.reshape(-1, C).sum(0))):
        assert got.dtype == dtype
        np.testing.assert_allclose(backend.to_numpy(got), ref, rtol=rtol, atol=10 * atol)


def test_blockwise_visits_every_row_once(monkeypatch):
    monkeypatch.setattr(backend, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setenv("NPFORMER_NUM_THREADS", "3")
    x = np.arange(101 * 3, dtype=np.float64).reshape(101, 3)
    out = np.zeros_like(x)

    def kernel(a, o):
        o += a + 1.0

    backend.blockwise(kernel, x, out, block_elements=10)
    np.testing.assert_array_equal(out, x + 1.0)


def test_keep_host_memory_is_idempotent():
    first = backend.keep_host_memory()
    assert isinstance(first, bool) and backend.keep_host_memory() == first


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
    caches = [value for m in model.modules() for name, value in vars(m).items() if name.startswith("_cache")]
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
    from npformer.optim import grad_norm

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
