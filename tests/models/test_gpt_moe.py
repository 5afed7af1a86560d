"""A GPT with mixture-of-experts feed-forward layers (ffn_kind="moe"): whole-model gradients of CE + auxiliary
losses, eval loss = CE, recomputation, checkpoints, generation with the KV cache, the progress note, old configs.

Routing is piecewise constant (top-k): each gradient check keeps every router logit of every layer at least GAP
from the others in its row (``assume`` on the logits the forward computed), so finite differences never swap
experts (see tests/functional/test_moe.py).
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npformer import backend
from npformer.data import CharTokenizer
from npformer.decode.generate import generate
from npformer.decode.kv_cache import make_kv_caches
from npformer.gradcheck import check_model
from npformer.models import GPT, GPTConfig
from npformer.models.config import FIELDS_ADDED_LATER
from npformer.train.checkpoint import save_checkpoint
from npformer.train.saved_models import load_gpt

from ..helpers import randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, seeds

GAP = 1e-3


@st.composite
def moe_configs(draw):
    n_experts = draw(st.integers(1, 3))
    return GPTConfig(vocab_size=draw(st.integers(2, 6)), block_size=draw(st.integers(1, 4)), n_layer=draw(
        st.integers(1, 2)), n_head=1, n_embd=draw(st.sampled_from([2, 4])), ffn_hidden=draw(st.integers(1, 3)),
        ffn_kind="moe", n_experts=n_experts, top_k=draw(st.integers(1, n_experts)),
        expert_kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])),
        router=draw(st.sampled_from(["mixtral", "switch"])), capacity_factor=draw(st.sampled_from([None, 0.5])),
        aux_loss_coef=draw(st.sampled_from([0.0, 0.3])), z_loss_coef=draw(st.sampled_from([0.0, 0.1])),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])), positions=draw(st.sampled_from(["learned", "rope"])),
        bias=draw(st.booleans()), tie_embeddings=draw(st.booleans()), loss_chunk=draw(st.sampled_from([0, 3])),
        kernels=draw(st.sampled_from([None, "reference"])))


def record_router_logits(model):
    """Wrap each MoE layer's gate so that every forward appends its logits to the returned list."""
    seen = []
    for layer in model.moe_layers:
        forward = layer.gate.forward

        def recording(x, forward=forward):
            y = forward(x)
            seen.append(backend.to_numpy(y))
            return y

        layer.gate.forward = recording
    return seen


def min_gap(logit_list):
    gaps = [np.diff(np.sort(z, axis=1), axis=1).min() for z in logit_list if z.shape[1] > 1]
    return min(gaps, default=np.inf)


@given(moe_configs(), st.integers(1, 2), seeds())
def test_moe_gpt_gradients(config, B, seed):
    """d(CE + sum of the layers' aux_loss_coef * aux + z_loss_coef * z)/d(every parameter) against central
    differences (float64, normwise rel. error < 1e-6), router logits kept GAP from ties. On the default backend
    (CI's second run makes that the CuPy stand-in); the MoE pairs and layer are checked on both in tests/functional
    and tests/nn."""
    with backend.float64():
        model = randomize_parameters(GPT(config), seed)
        seen = record_router_logits(model)
        rng = np.random.default_rng(seed)
        idx = backend.asarray(rng.integers(0, config.vocab_size, size=(B, config.block_size)))
        targets = backend.asarray(rng.integers(0, config.vocab_size, size=(B, config.block_size)))
        model.loss(idx, targets)
        assume(min_gap(seen) > GAP)
        report = check_model(lambda: model.loss(idx, targets), model.backward, model.named_parameters(),
                             rtol=GRAD_RTOL, atol=GRAD_ATOL)
        assert report.passed, f"{config}\n{report}"


def _batch(config, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, config.vocab_size, size=(B, config.block_size)),
            rng.integers(0, config.vocab_size, size=(B, config.block_size)))


def test_training_loss_adds_the_auxiliary_losses_and_eval_reports_cross_entropy():
    config = GPTConfig.preset("moe", vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                              z_loss_coef=0.001)
    model = GPT(config)
    idx, tgt = _batch(config)
    total = backend.to_float(model.loss(idx, tgt))
    model.backward()
    extra = sum(backend.to_float(layer.extra_loss) for layer in model.moe_layers)
    aux = [backend.to_float(layer.aux_loss) for layer in model.moe_layers]
    z = [backend.to_float(layer.z_loss) for layer in model.moe_layers]
    np.testing.assert_allclose(extra, sum(0.01 * a + 0.001 * b for a, b in zip(aux, z)), rtol=1e-6)
    model.eval()
    ce = backend.to_float(model.loss(idx, tgt))
    # capacity drops tokens in training only, so compare the training loss with CE computed in training mode
    model.train()
    logits = backend.to_numpy(model.forward(backend.asarray(idx))).astype(np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    ce_train = (lse - np.take_along_axis(logits, tgt[..., None], -1)[..., 0]).mean()
    np.testing.assert_allclose(total, ce_train + extra, rtol=1e-5)
    assert abs(ce - ce_train) < 0.5  # eval (nothing dropped) differs a little: the same model
    # in eval mode backward leaves the auxiliary losses out (the loss it returned did not hold them)
    model.eval()
    model.loss(idx, tgt)
    model.backward()
    assert all(layer.extra_loss_grad == 0.0 for layer in model.moe_layers)


def test_recompute_gives_identical_gradients():
    results = []
    for recompute in (False, True):
        config = GPTConfig.preset("moe", vocab_size=9, block_size=6, n_layer=2, n_head=2, n_embd=8,
                                  recompute=recompute, z_loss_coef=0.01)
        model = randomize_parameters(GPT(config), 5)
        idx, tgt = _batch(config)
        loss = model.loss(idx, tgt)
        model.backward()
        results.append((backend.to_float(loss), {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()},
                        model.progress_note()))
    assert results[0][0] == results[1][0] and results[0][2] == results[1][2]
    for name in results[0][1]:
        np.testing.assert_array_equal(results[0][1][name], results[1][1][name], err_msg=name)


def test_progress_note_shows_each_layers_experts():
    config = GPTConfig.preset("moe", vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, n_experts=3)
    model = GPT(config)
    assert model.progress_note() == ""  # before any forward
    model.loss(*_batch(config))
    note = model.progress_note()
    stats = model.expert_stats()
    assert stats.shape == (2, 3 + 2)
    np.testing.assert_allclose(stats[:, :3].sum(axis=1), 1.0, rtol=1e-6)
    assert note.startswith("experts L0 ") and " L1 " in note and " aux " in note and note.endswith("%")
    shares = note.split(" L0 ")[1].split("%")[0].split("/")
    assert [int(s) for s in shares] == [round(100 * f) for f in stats[0, :3]]
    assert GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)).progress_note() == ""


@pytest.mark.parametrize("expert_kind", ["gelu", "swiglu"])
def test_generation_with_the_kv_cache_equals_the_full_forward(xp_backend, expert_kind):
    """Greedy decoding with the cache equals decoding without it (capacity is a training budget: eval drops
    nothing, so one token at a time routes as the whole sequence does)."""
    with backend.float64():
        config = GPTConfig.preset("moe", vocab_size=13, block_size=12, n_layer=2, n_head=2, n_embd=8,
                                  expert_kind=expert_kind, capacity_factor=0.25, router="switch", top_k=1)
        model = randomize_parameters(GPT(config), 2)
        prompt = [1, 2, 3]
        cached = generate(model, prompt, max_new_tokens=8, temperature=0, use_cache=True)[0]
        plain = generate(model, prompt, max_new_tokens=8, temperature=0, use_cache=False)[0]
        np.testing.assert_array_equal(cached, plain)
        ids = np.asarray([cached[:11]])
        model.eval()
        full = backend.to_numpy(model.forward(backend.asarray(ids)))
        caches = make_kv_caches(model, 1, 11)
        for t in range(11):
            step = backend.to_numpy(model.forward(backend.asarray(ids[:, t:t + 1]), pos_offset=t, kv_caches=caches))
            np.testing.assert_allclose(step[:, 0], full[:, t], rtol=1e-10, atol=1e-12)
        assert model.training is False


def test_checkpoint_round_trip(tmp_path):
    config = GPTConfig.preset("moe", vocab_size=5, block_size=6, n_layer=2, n_head=2, n_embd=8, router="switch",
                              top_k=1, z_loss_coef=0.001, expert_kind="swiglu")
    model = randomize_parameters(GPT(config), 1)
    tokenizer = CharTokenizer("abcde")
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params=model.state_dict(), meta=dict(config=config.to_dict(), tokenizer=tokenizer.to_dict()))
    loaded, _, _ = load_gpt(str(path))
    assert loaded.config == config
    idx, tgt = _batch(config)
    model.eval(), loaded.eval()
    np.testing.assert_array_equal(backend.to_numpy(model.forward(idx)), backend.to_numpy(loaded.forward(idx)))


def test_old_configs_load_and_new_fields_are_checked():
    old = GPTConfig().to_dict()
    for name in FIELDS_ADDED_LATER:
        old.pop(name)
    assert GPTConfig.from_dict(old) == GPTConfig()
    assert GPTConfig(ffn_kind="moe", capacity_factor=0).moe_options()["capacity_factor"] is None  # 0: no limit
    for bad, message in ((dict(top_k=5), "top_k=5 exceeds n_experts=4"), (dict(n_experts=0), "n_experts must be"),
                         (dict(router="hash"), "router must be one of"), (dict(capacity_factor=-1), "capacity_factor"),
                         (dict(aux_loss_coef=-1.0), "aux_loss_coef must be"), (dict(expert_kind="moe"), "expert_kind")):
        with pytest.raises(ValueError, match=message):
            GPTConfig(ffn_kind="moe", **bad)


def test_moe_preset_has_experts_as_wide_as_the_dense_ffn():
    moe = GPT(GPTConfig.preset("moe", n_layer=1))
    dense = GPT(GPTConfig.preset("gpt2-style", n_layer=1))
    expert = moe.blocks[0].ffn
    assert expert.n_experts == 4 and expert.top_k == 2
    assert expert.w_fc.shape == (4,) + dense.blocks[0].ffn.fc.weight.shape
    extra = moe.num_parameters() - dense.num_parameters()
    assert extra == 3 * sum(p.size for p in dense.blocks[0].ffn.parameters()) + 128 * 4  # 3 more experts, the gate


def test_data_parallel_chunks_each_carry_their_auxiliary_losses():
    """A data-parallel runner's loss is the chunks' weighted mean of (CE + aux) per chunk, and its gradient that
    mean's (the aux loss is per chunk, as per device in real systems). NumPy: replicas share CPU cores."""
    from npformer.parallel import DataParallel

    with backend.use_backend("numpy"):
        config = GPTConfig.preset("moe", vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8,
                                  z_loss_coef=0.01)
        model = randomize_parameters(GPT(config).astype(np.float64), 4)
        idx, tgt = _batch(config, B=4)
        runner = DataParallel(model, workers=2)
        model.zero_grad()
        loss = backend.to_float(runner.loss(idx, tgt))
        runner.backward()
        got = {n: backend.to_numpy(p.grad).copy() for n, p in model.named_parameters()}
        runner.close()
        model.zero_grad()
        expected = 0.0
        for a, b in ((0, 2), (2, 4)):
            expected += 0.5 * backend.to_float(model.loss(idx[a:b], tgt[a:b]))
            model.backward(0.5)
        np.testing.assert_allclose(loss, expected, rtol=1e-12)
        for name, p in model.named_parameters():
            np.testing.assert_allclose(got[name], backend.to_numpy(p.grad), rtol=1e-9, atol=1e-12, err_msg=name)


def test_caches_are_dropped_and_only_the_outputs_stay():
    """drop_caches forgets what backward needs; what stays on an MoE layer is the last forward's small outputs
    (its losses and statistics, which the model's loss and progress note read)."""
    config = GPTConfig.preset("moe", vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config)
    model.loss(*_batch(config))
    layer = model.moe_layers[0]
    assert layer._cache is not None
    model.drop_caches()
    assert layer._cache is None and model._cache_loss is None
    assert layer.extra_loss is not None and layer.stats is not None
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()


@pytest.mark.parametrize("dloss", [np.float64(1.0), np.asarray(1.0)], ids=["float64", "0-d"])
def test_a_float64_upstream_keeps_a_float32_model_in_float32(dloss):
    """GPT.backward(np.float64(1.0)): the gradient reaching each block below an MoE layer stays float32 (the
    auxiliary losses' backwards cast the upstream scalar; the parameters' += would hide an upcast, so the blocks'
    incoming gradients are what is checked)."""
    config = GPTConfig.preset("moe", vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=8, z_loss_coef=0.01)
    model = GPT(config)
    assert model.blocks[0].ffn.w_fc.data.dtype == np.float32
    seen = []
    for block in model.blocks:
        def recording(dy, backward=block.backward):
            seen.append(dy.dtype)
            dx = backward(dy)
            seen.append(dx.dtype)
            return dx
        block.backward = recording
    idx, tgt = _batch(config, B=2)
    model.loss(idx, tgt)
    model.backward(dloss)
    assert seen and all(dtype == np.float32 for dtype in seen), seen
