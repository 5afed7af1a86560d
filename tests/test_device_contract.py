"""The host/device contract on a device backend (the real CuPy on a GPU, else the strict stand-in):

- public entry points take host ids, targets, labels and masks for a device model and move them at the boundary;
  host ids are range-checked there, for free;
- a training step makes no device-to-host sync, except one at the steps the trainer logs; a generated token one;
- dropout keeps one generator per layer across steps, and its state saves and restores exactly.
"""

import json

import numpy as np
import pytest

from npformer import backend
from npformer.data import BatchSampler
from npformer.decode import beam_search, generate, greedy_decode
from npformer.models import GPT, Encoder, EncoderConfig, EncoderDecoder, EncoderDecoderConfig, GPTConfig, mask_tokens
from npformer.nn import Dropout
from npformer.train import TrainConfig, Trainer
from npformer.train.optim import AdamW, clip_grad_norm, param_groups

from .helpers import randomize_parameters

pytestmark = pytest.mark.skipif("cupy" not in backend.available_backends(), reason="no CuPy, real or stand-in")


@pytest.fixture
def cupy():
    with backend.use_backend("cupy") as mod:
        yield mod


def syncs(cupy) -> int:
    """Device-to-host transfers so far; the stand-in counts them (a real CuPy cannot: those tests skip)."""
    if not hasattr(cupy, "sync_count"):
        pytest.skip("syncs are counted by the stand-in only")
    return cupy.sync_count()


def tiny_gpt(**options):
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, **options))


# ---------------------------------------------------------------------------------------------------------------
# host inputs for device models
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, dict(loss_chunk=3), dict(positions="rope", norm="rmsnorm", n_kv_head=1)])
def test_gpt_takes_host_ids_and_targets(cupy, options):
    model = randomize_parameters(tiny_gpt(**options), 0)
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
    tgt[0, 3] = -100
    host_loss = model.loss(idx, tgt)
    model.backward()
    host_grads = {n: backend.to_numpy(p.grad).copy() for n, p in model.named_parameters()}
    model.zero_grad()
    dev_loss = model.loss(cupy.asarray(idx), cupy.asarray(tgt))
    model.backward()
    assert isinstance(host_loss, cupy.ndarray) and backend.to_float(host_loss) == backend.to_float(dev_loss)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(backend.to_numpy(p.grad), host_grads[n], err_msg=n)
    assert isinstance(model.forward(idx), cupy.ndarray)


def test_host_ids_are_range_checked_for_free_and_device_ids_cost_no_sync(cupy):
    model = tiny_gpt()
    with pytest.raises(ValueError, match="GPT: id 11 is out of range"):
        model.forward(np.array([[1, 11]]))
    with pytest.raises(ValueError, match="target 12 is out of range"):
        model.loss(np.array([[1, 2]]), np.array([[3, 12]]))
    before = syncs(cupy)
    model.loss(cupy.asarray(np.array([[1, 2]])), cupy.asarray(np.array([[3, 4]])))
    model.backward()
    assert syncs(cupy) == before  # device ids: no range check, so no sync (documented)


def test_encoder_and_encoder_decoder_take_host_inputs(cupy):
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 12, (3, 6))
    ids[0, 4:] = 0  # padding: the masks built from host ids must meet device queries
    enc = randomize_parameters(Encoder(EncoderConfig(vocab_size=12, max_len=6, n_layer=1, n_head=2, n_embd=8,
                                                     n_classes=3)), 1)
    inputs, targets = mask_tokens(ids, 3, 12, rng=0, pad_id=0)
    assert backend.on_host(inputs)  # drawn where the ids live
    dev_inputs, _ = mask_tokens(cupy.asarray(ids), 3, 12, rng=0, pad_id=0)
    assert isinstance(dev_inputs, cupy.ndarray)
    loss = enc.mlm_loss(inputs, targets)
    enc.backward()
    assert isinstance(loss, cupy.ndarray)
    enc.classify_loss(ids, np.array([0, 2, 1]))
    enc.backward()
    s2s = EncoderDecoder(EncoderDecoderConfig(src_vocab_size=12, tgt_vocab_size=12, max_len=6, n_encoder_layer=1,
                                              n_decoder_layer=1, n_head=2, n_embd=8))
    s2s.loss(ids, ids, ids)
    s2s.backward()
    for decoded in (greedy_decode(s2s, ids, 4, bos=1, eos=2), beam_search(s2s, ids, 2, 4, bos=1, eos=2)):
        assert isinstance(decoded, cupy.ndarray) and decoded.shape[0] == 3


def test_load_state_dict_puts_host_arrays_on_the_models_backend(cupy):
    model = tiny_gpt()
    state = {name: np.full(value.shape, 0.5, value.dtype) for name, value in model.state_dict().items()}
    model.load_state_dict(state)
    for _, p in model.named_parameters():
        assert isinstance(p.data, cupy.ndarray) and backend.to_float(p.data.reshape(-1)[0]) == 0.5


# ---------------------------------------------------------------------------------------------------------------
# syncs
# ---------------------------------------------------------------------------------------------------------------
def test_a_training_step_makes_no_sync(cupy):
    model = tiny_gpt(dropout=0.1)
    opt = AdamW(param_groups(model, 0.1))
    x, y = BatchSampler(np.arange(400) % 11, 8, 4, seed=0).next()
    before = syncs(cupy)
    for _ in range(3):
        model.zero_grad()
        model.loss(x, y)
        model.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
    assert syncs(cupy) == before


def test_the_trainer_syncs_once_at_a_logged_step_and_never_between(cupy):
    data = np.arange(3000) % 11
    cfg = TrainConfig(max_iters=12, batch_size=4, warmup_iters=2, eval_interval=6, eval_iters=2, log_interval=3,
                      quiet=True, workers=1)  # no out_dir: checkpoints (which bring every array home) aside
    trainer = Trainer(tiny_gpt(), cfg, data[:2700], data[2700:])
    before = syncs(cupy)
    loss, norm = trainer.train_step(sync=False)
    assert syncs(cupy) == before and np.isnan(loss) and np.isnan(norm)
    loss, norm = trainer.train_step(sync=True)
    assert syncs(cupy) == before + 1 and np.isfinite(loss) and np.isfinite(norm)
    before = syncs(cupy)
    trainer.run()  # steps 3..12: one sync at each logged step (3, 6, 9, 12), one per evaluation (step 6, the end)
    assert syncs(cupy) - before == 4 + 2
    assert trainer.final_val_loss > 0


def test_a_non_finite_step_between_syncs_is_caught_at_the_next(cupy, tmp_path):
    data = np.arange(3000) % 11
    cfg = TrainConfig(max_iters=6, batch_size=4, warmup_iters=1, eval_interval=100, eval_iters=1, log_interval=3,
                      quiet=True, workers=1)
    model = tiny_gpt()
    trainer = Trainer(model, cfg, data[:2700], data[2700:])
    trainer.train_step(sync=False)
    model.wte.weight.data[0, 0] = float("nan")  # the next step's loss is NaN, but nobody looks yet
    trainer.train_step(sync=False)
    from npformer.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="not finite|nan"):
        trainer.train_step(sync=True)


def test_a_generated_token_costs_one_sync(cupy):
    model = tiny_gpt()
    before = syncs(cupy)
    out = generate(model, [1, 2, 3], max_new_tokens=5, seed=0)
    assert syncs(cupy) - before <= 5 and len(out[0]) == 8


# ---------------------------------------------------------------------------------------------------------------
# random state
# ---------------------------------------------------------------------------------------------------------------
def test_dropout_keeps_one_generator_and_its_state_restores_exactly(cupy):
    drop = Dropout(0.5, seed=3)
    x = cupy.ones((4, 16))
    drop.forward(x)
    generator = drop.generator
    drop.forward(x)
    assert drop.generator is generator  # one per layer, kept across steps (no generator per forward)
    state = json.loads(json.dumps(drop.rng_state()))  # plain data, as a checkpoint stores it
    expected = [backend.to_numpy(drop.forward(x)) for _ in range(2)]
    other = Dropout(0.5, seed=99)
    other.set_rng_state(state)
    got = [backend.to_numpy(other.forward(x)) for _ in range(2)]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(expected[0], expected[1])  # the stream moves on between forwards


def test_training_with_dropout_resumes_exactly_on_the_device(cupy, tmp_path):
    data = (np.arange(3000) * 7) % 11

    def trainer(max_iters):
        cfg = TrainConfig(max_iters=max_iters, batch_size=4, warmup_iters=1, lr_decay_iters=8, eval_interval=4,
                          eval_iters=1, log_interval=1, out_dir=str(tmp_path / "run"), quiet=True, workers=1)
        return Trainer(tiny_gpt(dropout=0.2), cfg, data[:2700], data[2700:])

    straight = trainer(8)
    losses = [straight.train_step()[0] for _ in range(8)]
    first = trainer(4)
    first.run()
    resumed = trainer(8)
    resumed.resume()
    assert resumed.step == 4
    assert [resumed.train_step()[0] for _ in range(4)] == losses[4:]
