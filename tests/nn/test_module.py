"""Module, the base class every layer and model shares: parameter discovery, state dicts, zero_grad, astype, and
the caches each class declares (what drop_caches forgets)."""

import numpy as np
import pytest
from hypothesis import given

from npformer import backend
from npformer.models import GPT, Encoder, EncoderConfig, EncoderDecoder, EncoderDecoderConfig, GPTConfig
from npformer.nn import Linear, TransformerBlock

from ..helpers import randomize_parameters
from ..strategies import gpt_configs, seeds


# ---------------------------------------------------------------------------------------------------------------
# parameters and state
# ---------------------------------------------------------------------------------------------------------------
def test_parameters_state_dict_and_zero_grad():
    block = randomize_parameters(TransformerBlock(8, 2, 1, ffn_kind="swiglu", norm="rmsnorm", bias=False), 0)
    names = [n for n, _ in block.named_parameters()]
    assert names == sorted(set(names), key=names.index)  # unique
    assert "attn.qkv.weight" in names and "ffn.proj.weight" in names and not any("bias" in n for n in names)
    state = block.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    other = TransformerBlock(8, 2, 1, ffn_kind="swiglu", norm="rmsnorm", bias=False, rng=99)
    for name, p in other.named_parameters():  # so that loading the state has something to change in each
        assert not np.array_equal(backend.to_numpy(p.data), state[name]), name
    other.load_state_dict(state)
    for (_, a), (_, b) in zip(block.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(backend.to_numpy(a.data), backend.to_numpy(b.data))
    state["norm1.weight"][...] = 5.0  # a copy: changing it leaves the block alone
    assert not np.any(backend.to_numpy(block.norm1.weight.data) == 5.0)
    for p in block.parameters():
        p.grad += 1.0
    block.zero_grad()
    assert all(float(abs(p.grad).max()) == 0.0 for p in block.parameters())


def test_load_state_dict_names_every_problem():
    layer = Linear(3, 4)
    bad = {"weight": np.zeros((4, 3), dtype=np.float32), "extra": np.zeros(2, dtype=np.float32)}
    with pytest.raises(ValueError, match=r"missing: bias.*unexpected: extra.*weight: shape \(4, 3\)"):
        layer.load_state_dict(bad)


def test_load_state_dict_non_strict_loads_the_common_names_and_still_checks_shapes():
    layer = Linear(3, 4)
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    layer.load_state_dict({"weight": weight, "extra": np.zeros(2, dtype=np.float32)}, strict=False)
    np.testing.assert_array_equal(backend.to_numpy(layer.weight.data), weight)
    with pytest.raises(ValueError, match=r"weight: shape \(4, 3\)"):
        layer.load_state_dict({"weight": weight.T}, strict=False)


def test_astype_round_trips_bias_free_and_sinusoidal_models():
    for positions in ("sinusoidal", "learned"):
        model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4, bias=False,
                              positions=positions))
        ids = np.array([[1, 2, 3]])
        model.forward(ids)  # builds the float32 tables
        for dtype in (np.float64, np.float32):
            model.astype(dtype)
            assert model.forward(ids).dtype == dtype
            assert all(p.data.dtype == dtype and p.grad.dtype == dtype for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# caches: declared per class, and all that drop_caches forgets
# ---------------------------------------------------------------------------------------------------------------
# attributes a forward may change that are not what backward needs: dropout's mask stream (its generator, kept
# across steps, and where the last forward began in it, so a block can replay that forward) and a bias-free
# LayerNorm's zero bias (built once per shape and dtype)
NOT_CACHES = {("Dropout", "generator"), ("Dropout", "_next_seed"), ("Dropout", "_before_last"), ("Dropout", "_replay"),
              ("LayerNorm", "_zero_bias")}


def _attributes(model):
    return {(id(m), name): (type(m).__name__, value) for m in model.modules() for name, value in vars(m).items()}


def assert_caches_declared_and_dropped(model, run_forward):
    """Everything a forward stores on a module is declared in its class's ``caches``; drop_caches sets every
    declared attribute of every module to None."""
    before = _attributes(model)
    run_forward()
    after = _attributes(model)
    changed = {(cls, name) for key, (cls, value) in after.items() for name in [key[1]]
               if key not in before or before[key][1] is not value}
    declared = {(type(m).__name__, name) for m in model.modules() for name in type(m).caches}
    assert changed - NOT_CACHES <= declared, f"stored by forward but not declared: {changed - NOT_CACHES - declared}"
    assert changed & declared, "the forward stored nothing to drop: the check below would be empty"
    model.drop_caches()
    kept = [(type(m).__name__, name) for m in model.modules() for name in type(m).caches
            if getattr(m, name) is not None]
    assert not kept, f"drop_caches left {kept}"


@given(gpt_configs(), seeds())
def test_gpt_caches_are_declared_and_dropped(config, seed):
    model = GPT(config)
    rng = np.random.default_rng(seed)
    idx, tgt = (rng.integers(0, config.vocab_size, size=(2, config.block_size)) for _ in range(2))
    assert_caches_declared_and_dropped(model, lambda: model.loss(idx, tgt))
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()


@pytest.mark.parametrize("head", ["mlm", "classify"])
def test_encoder_caches_are_declared_and_dropped(head):
    model = Encoder(EncoderConfig(vocab_size=7, max_len=4, n_layer=2, n_head=2, n_embd=8, n_classes=2,
                                  dropout=0.2, bias=False))
    ids = np.array([[1, 2, 3], [4, 5, 0]])
    if head == "mlm":
        assert_caches_declared_and_dropped(model, lambda: model.mlm_loss(ids, np.array([[1, -100, 2], [3, 4, -100]])))
    else:
        assert_caches_declared_and_dropped(model, lambda: model.classify_loss(ids, np.array([0, 1])))
    with pytest.raises(RuntimeError):
        model.backward()


def test_encoder_decoder_caches_are_declared_and_dropped():
    model = EncoderDecoder(EncoderDecoderConfig(src_vocab_size=7, tgt_vocab_size=6, max_len=4, n_encoder_layer=1,
                                                n_decoder_layer=2, n_head=2, n_embd=8, dropout=0.2))
    src, tgt_in, tgt_out = np.array([[1, 2, 3]]), np.array([[1, 2]]), np.array([[2, 3]])
    assert_caches_declared_and_dropped(model, lambda: model.loss(src, tgt_in, tgt_out))
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()
