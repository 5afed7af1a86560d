"""GPT.from_pretrained / save_pretrained against transformers, with random models transformers writes into
tmp_path (GPT-2, GPT-2 untied with exact GELU and another epsilon, Llama with grouped-query attention, Llama with
biases, a tied head and one key/value head, Mistral): float32 logits equal transformers' to 1e-4; float64
parameter gradients equal torch autograd's through the name mapping; greedy generation with the key/value cache
equals transformers' generate; a directory transformers wrote round-trips byte for byte; what npformer writes,
transformers reads with equal logits; sharded and BF16 directories. Then, without transformers, every config or
file npformer cannot reproduce is refused by name."""

import json
import os

import numpy as np
import pytest

from npformer import backend
from npformer.decode.generate import generate
from npformer.io import load_safetensors, save_safetensors
from npformer.models import GPT, GPTConfig
from npformer.models.hf_config import hf_model_type
from npformer.models.pretrained import hf_to_npformer, weight_table
from npformer.train.checkpoint import load_checkpoint, save_checkpoint

from ..helpers import randomize_parameters

V, T = 97, 12
LOGIT_TOL = dict(rtol=1e-5, atol=1e-4)  # float32, two libraries, different summation orders
FILES = ("config.json", "model.safetensors", "generation_config.json")

# transformers config classes and their arguments: each a case of the mapping
CASES = {
    "gpt2": ("GPT2Config", dict(n_positions=16, n_embd=16, n_layer=2, n_head=2)),
    "gpt2-untied-erf": ("GPT2Config", dict(n_positions=16, n_embd=16, n_layer=2, n_head=4, n_inner=24,
                                           activation_function="gelu", layer_norm_epsilon=1e-3,
                                           tie_word_embeddings=False)),
    "llama-gqa": ("LlamaConfig", dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      rope_theta=500.0, rms_norm_eps=1e-3)),
    "llama-bias-tied-mqa": ("LlamaConfig", dict(hidden_size=16, intermediate_size=20, num_hidden_layers=2,
                                                num_attention_heads=2, num_key_value_heads=1,
                                                max_position_embeddings=32, attention_bias=True, mlp_bias=True,
                                                tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)),
}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{case: (directory written by transformers, the torch model in float32, eval mode)}; weights N(0, 0.3^2),
    norm weights included, so that a parameter read into the wrong place changes the logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for i, (case, (config_class, kwargs)) in enumerate(CASES.items()):
        torch.manual_seed(i)
        config = getattr(transformers, config_class)(vocab_size=V, bos_token_id=None, eos_token_id=None, **kwargs)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        model.eval().save_pretrained(root / case)
        out[case] = (root / case, model)
    return out


def _torch_logits(model, idx):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(idx)).logits.float().numpy()


def _ours_logits(model, idx):
    return backend.to_numpy(model.forward(idx))


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_equal_transformers_float32(hf_dirs, case):
    path, theirs = hf_dirs[case]
    ours = GPT.from_pretrained(path)
    assert ours.wte.weight.data.dtype == np.float32
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))
    got, want = _ours_logits(ours, idx), _torch_logits(theirs, idx)
    print(f"{case}: max abs logit difference {np.abs(got - want).max():.2e} (logits up to {np.abs(want).max():.1f})")
    np.testing.assert_allclose(got, want, **LOGIT_TOL)


def test_a_transposed_square_weight_is_seen(hf_dirs, tmp_path):
    """The logits test can fail: GPT-2's c_proj is square (C, C), so a mapping that transposed Conv1D weights would
    load without a shape error; the logits then differ far beyond the tolerance."""
    path, theirs = hf_dirs["gpt2"]
    tensors = dict(load_safetensors(path / "model.safetensors"))
    name = "transformer.h.0.attn.c_proj.weight"
    tensors[name] = np.ascontiguousarray(tensors[name].T)
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    save_safetensors(tmp_path / "model.safetensors", tensors, metadata={"format": "pt"})
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))
    gap = np.abs(_ours_logits(GPT.from_pretrained(tmp_path), idx) - _torch_logits(theirs, idx)).max()
    assert gap > 100 * LOGIT_TOL["atol"]


def _llama_in_float64(monkeypatch, torch):
    """transformers' Llama keeps float32 islands in a float64 model: RMSNorm (``hidden_states.to(float32)``), the
    rotary tables (``.float()``) and eager attention's softmax (so the gradient test runs attention as sdpa).
    Patched to compute the same formulas in the model's dtype, so that a float64 comparison compares the maths,
    not transformers' float32 rounding (about 1e-7 relative otherwise)."""
    from transformers.models.llama import modeling_llama

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rotary(self, x, position_ids):
        config = self.config
        dim = config.head_dim or config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2, dtype=x.dtype) / dim))
        freqs = position_ids[..., None].to(x.dtype) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rms_norm)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", rotary)


@pytest.mark.parametrize("case", ["gpt2", "gpt2-untied-erf", "llama-gqa", "llama-bias-tied-mqa"])
def test_gradients_equal_torch_autograd_float64(hf_dirs, case, monkeypatch):
    """loss = mean cross-entropy of the logits against random targets; every parameter's gradient, ours by hand,
    theirs by autograd on transformers' model, compared through the name mapping (float64 both)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if case.startswith("llama"):
        _llama_in_float64(monkeypatch, torch)
    path, _ = hf_dirs[case]
    ours = GPT.from_pretrained(path, dtype="float64")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64,
                                                               attn_implementation="sdpa").eval()
    rng = np.random.default_rng(1)
    idx, tgt = rng.integers(0, V, size=(2, T)), rng.integers(0, V, size=(2, T))
    loss = ours.loss(idx, tgt)
    ours.backward()
    logits = theirs(torch.from_numpy(idx)).logits
    t_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(tgt).reshape(-1))
    t_loss.backward()
    np.testing.assert_allclose(backend.to_float(loss), t_loss.item(), rtol=1e-10)
    hf = ours.config.extra["hf"]
    table = weight_table(ours.config, hf_model_type(ours.config), hf["prefix"])
    grads = hf_to_npformer({n: p.grad.numpy() for n, p in theirs.named_parameters()}, table)
    assert sorted(grads) == sorted(n for n, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(backend.to_numpy(p.grad), grads[name], rtol=1e-7, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("case", ["gpt2", "llama-gqa"])
def test_greedy_generation_with_the_cache_equals_transformers(hf_dirs, case):
    torch = pytest.importorskip("torch")
    path, theirs = hf_dirs[case]
    ours = GPT.from_pretrained(path)
    prompt = np.random.default_rng(2).integers(0, V, size=(1, 4))
    got = generate(ours, prompt, max_new_tokens=8, temperature=0.0)[0]
    with torch.no_grad():
        want = theirs.generate(torch.from_numpy(prompt), max_new_tokens=8, do_sample=False, pad_token_id=0)[0]
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_transformers_directory_round_trips_unchanged(hf_dirs, tmp_path, case):
    path, _ = hf_dirs[case]
    GPT.from_pretrained(path).save_pretrained(tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (path / name).read_bytes(), name


@pytest.mark.parametrize("preset, options", [
    ("gpt2-style", {}), ("gpt2-style", dict(tie_embeddings=False, gelu_approximate="none", norm_eps=1e-3)),
    ("llama-style", dict(n_kv_head=1)), ("llama-style", dict(bias=True, tie_embeddings=True, rope_base=123.0)),
])
def test_what_npformer_writes_transformers_reads(tmp_path, preset, options):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = GPTConfig.preset(preset, vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=16, **options)
    ours = randomize_parameters(GPT(config), 3, scale=0.3)
    written = ours.save_pretrained(tmp_path)
    assert sorted(written) == ["config.json", "model.safetensors"]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert theirs.dtype == torch.float32
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))
    np.testing.assert_allclose(_torch_logits(theirs, idx), _ours_logits(ours, idx), **LOGIT_TOL)
    back = GPT.from_pretrained(tmp_path)
    for (name, p), (_, q) in zip(ours.named_parameters(), back.named_parameters()):
        np.testing.assert_array_equal(backend.to_numpy(p.data), backend.to_numpy(q.data), err_msg=name)


def test_shards_both_ways(hf_dirs, tmp_path):
    transformers = pytest.importorskip("transformers")
    path, theirs = hf_dirs["llama-gqa"]
    theirs.save_pretrained(tmp_path / "sharded", max_shard_size="8KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))
    want = _torch_logits(theirs, idx)
    ours = GPT.from_pretrained(tmp_path / "sharded")
    np.testing.assert_allclose(_ours_logits(ours, idx), want, **LOGIT_TOL)
    written = ours.save_pretrained(tmp_path / "ours", max_shard_size=4000)
    assert "model.safetensors.index.json" in written and len(written) > 4
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager")
    np.testing.assert_allclose(_torch_logits(again.eval(), idx), want, **LOGIT_TOL)
    ours.save_pretrained(tmp_path / "ours")  # one file now: the shards and their index are gone
    assert sorted(os.listdir(tmp_path / "ours")) == ["config.json", "generation_config.json", "model.safetensors"]


def test_bfloat16_directories(hf_dirs, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, theirs = hf_dirs["gpt2"]
    theirs.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    theirs.to(torch.float32)
    ours = GPT.from_pretrained(tmp_path / "bf16")  # widened to float32
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32,
                                                                  attn_implementation="eager").eval()
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))
    np.testing.assert_allclose(_ours_logits(ours, idx), _torch_logits(reference, idx), **LOGIT_TOL)
    ours.save_pretrained(tmp_path / "again")  # written back as BF16: the same bytes
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "bf16" / name).read_bytes(), name


# -- without transformers: directories npformer writes, then edits ----------------------------------------------------
def _npformer_dir(tmp_path, preset="gpt2-style", **options):
    config = GPTConfig.preset(preset, vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=16, **options)
    model = randomize_parameters(GPT(config), 0, scale=0.3)
    model.save_pretrained(tmp_path)
    return model


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("preset, changes, message", [
    ("gpt2-style", dict(model_type="bert"), "model_type 'bert' is not supported; npformer reads gpt2, llama"),
    ("gpt2-style", dict(scale_attn_by_inverse_layer_idx=True), "key 'scale_attn_by_inverse_layer_idx'"),
    ("gpt2-style", dict(scale_attn_weights=False), "key 'scale_attn_weights'"),
    ("gpt2-style", dict(activation_function="quick_gelu"), "key 'activation_function'"),
    ("gpt2-style", dict(add_cross_attention=True), "key 'add_cross_attention'"),
    ("gpt2-style", dict(n_embd=None), "config.json has no 'n_embd'"),
    ("llama-style", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
     "key 'rope_parameters'.*rotary scaling 'llama3'"),
    ("llama-style", dict(rope_scaling={"type": "linear", "factor": 2.0}), "key 'rope_scaling'"),
    ("llama-style", dict(attention_bias=True), "key 'attention_bias' .* without the other"),
    ("llama-style", dict(head_dim=8), "key 'head_dim'"),
    ("llama-style", dict(hidden_act="gelu"), "key 'hidden_act'"),
    ("llama-style", dict(attn_logit_softcapping=50.0), "key 'attn_logit_softcapping'"),
    ("llama-style", dict(quantization_config={"quant_method": "gptq"}), "key 'quantization_config'"),
    ("llama-style", dict(layer_types=["sliding_attention", "full_attention"]), "key 'layer_types'"),
])
def test_config_keys_that_change_the_maths_are_refused_by_name(tmp_path, preset, changes, message):
    _npformer_dir(tmp_path, preset)
    _edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(tmp_path)


def test_transformers_4_spelling_and_a_sliding_window(tmp_path):
    model = _npformer_dir(tmp_path, "llama-style", n_kv_head=2, rope_base=321.0)
    _edit_config(tmp_path, rope_parameters=None, rope_theta=321.0, rope_scaling=None)
    assert GPT.from_pretrained(tmp_path).config.rope_base == 321.0
    # within the window (T = 8) sliding-window attention is full causal attention
    _edit_config(tmp_path, model_type="mistral", sliding_window=8)
    loaded = GPT.from_pretrained(tmp_path)
    assert loaded.config.window == 8 and loaded.config.block_size == model.config.block_size  # context kept
    idx = np.random.default_rng(0).integers(0, V, size=(1, 8))
    np.testing.assert_allclose(_ours_logits(loaded, idx), _ours_logits(model, idx), rtol=1e-6, atol=1e-6)


def test_files_that_do_not_fit_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        GPT.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        GPT.from_pretrained(tmp_path)
    _npformer_dir(tmp_path)
    weights = dict(load_safetensors(tmp_path / "model.safetensors"))
    os.replace(tmp_path / "model.safetensors", tmp_path / "weights.keep")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin: pickle-based formats, which npformer never"):
        GPT.from_pretrained(tmp_path)
    for drop, add, message in [("transformer.h.1.ln_2.bias", None, "lack 'transformer.h.1.ln_2.bias'"),
                               (None, "transformer.h.2.ln_1.weight", "hold 'transformer.h.2.ln_1.weight', which"),
                               (None, "transformer.h.0.attn.bias", None)]:  # GPT-2's causal-mask buffer: ignored
        tensors = {k: v for k, v in weights.items() if k != drop}
        if add:
            tensors[add] = np.ones(16, np.float32)
        save_safetensors(tmp_path / "model.safetensors", tensors, metadata={"format": "pt"})
        if message is None:
            GPT.from_pretrained(tmp_path)
        else:
            with pytest.raises(ValueError, match=message):
                GPT.from_pretrained(tmp_path)
    tensors = dict(weights)
    tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"][:, :8].copy()
    save_safetensors(tmp_path / "model.safetensors", tensors, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"wte.weight: shape \(97, 8\) in the state, \(97, 16\) expected"):
        GPT.from_pretrained(tmp_path)


def test_a_shard_index_that_lies_is_refused(tmp_path):
    model = _npformer_dir(tmp_path)
    model.save_pretrained(tmp_path, max_shard_size=3000)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    held = {}
    for tensor, shard in sorted(index["weight_map"].items()):
        held.setdefault(shard, []).append(tensor)
    home = next(shard for shard, names in sorted(held.items()) if len(names) > 1)  # still read after the lie
    name = held[home][0]
    elsewhere = next(s for s in sorted(set(index["weight_map"].values())) if s != home)
    for shard, message in [("../elsewhere.safetensors", "names shard '../elsewhere.safetensors', which is not a file"),
                           (elsewhere, f"tensor '{name}' is in '{home}', but model.safetensors.index.json puts it "
                                       f"in '{elsewhere}'")]:
        index_path.write_text(json.dumps({**index, "weight_map": {**index["weight_map"], name: shard}}))
        with pytest.raises(ValueError, match=message):
            GPT.from_pretrained(tmp_path)


def test_the_hub_layout_of_gpt2(tmp_path):
    """openai-community/gpt2's model.safetensors names tensors without "transformer." and carries each block's
    causal-mask buffer (attn.bias); its config.json has no dtype and keys of its own (n_ctx, task_specific_params).
    It loads, and writes back in its own layout, without the buffers."""
    model = _npformer_dir(tmp_path / "npformer")
    tensors = {k.removeprefix("transformer."): v for k, v in load_safetensors(
        tmp_path / "npformer" / "model.safetensors").items()}
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
    hub = tmp_path / "hub"
    hub.mkdir()
    save_safetensors(hub / "model.safetensors", tensors, metadata={"format": "pt"})
    config = json.loads((tmp_path / "npformer" / "config.json").read_text())
    del config["dtype"]
    config.update(n_ctx=16, task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}})
    (hub / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    loaded = GPT.from_pretrained(hub)
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))
    np.testing.assert_array_equal(_ours_logits(loaded, idx), _ours_logits(model, idx))
    loaded.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_text() == (hub / "config.json").read_text()
    written = load_safetensors(tmp_path / "out" / "model.safetensors")
    assert sorted(written) == sorted(k for k in tensors if not k.endswith(".attn.bias"))


def test_overrides_crop_and_refuse(tmp_path):
    model = _npformer_dir(tmp_path)
    cropped = GPT.from_pretrained(tmp_path, block_size=8, dropout=0.1)
    assert cropped.wpe.weight.shape == (8, 16) and cropped.config.dropout == 0.1
    idx = np.random.default_rng(0).integers(0, V, size=(2, 8))
    cropped.eval()
    np.testing.assert_array_equal(_ours_logits(cropped, idx), _ours_logits(model, idx))
    with pytest.raises(ValueError, match="block_size=32 exceeds the 16 learned position embeddings"):
        GPT.from_pretrained(tmp_path, block_size=32)
    with pytest.raises(ValueError, match="n_layer cannot be overridden"):
        GPT.from_pretrained(tmp_path, n_layer=3)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        GPT.from_pretrained(tmp_path, dtype="float16")


def test_save_pretrained_refuses_a_model_transformers_does_not_have(tmp_path):
    for options, message in [(dict(norm_placement="post"), "norm_placement='post'"),
                             (dict(positions="sinusoidal"), "positions='sinusoidal'"),
                             (dict(bias=False), "bias=False")]:
        model = GPT(GPTConfig.preset("gpt2-style", vocab_size=V, n_layer=1, n_head=2, n_embd=8, **options))
        with pytest.raises(ValueError, match=f"no Hugging Face equivalent .*{message}"):
            model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT(GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path, dtype="int8")


def test_a_checkpoint_of_a_pretrained_model_saves_the_same_directory(tmp_path):
    """What examples/finetune.py does: the config (with the source config.json in extra) goes through a checkpoint's
    JSON, and the model rebuilt from it writes the directory it came from."""
    _npformer_dir(tmp_path / "src", "llama-style", n_kv_head=2)
    model = GPT.from_pretrained(tmp_path / "src")
    save_checkpoint(tmp_path / "ckpt.npz", params=model.state_dict(), meta={"config": model.config.to_dict()})
    ckpt = load_checkpoint(tmp_path / "ckpt.npz")
    rebuilt = GPT(GPTConfig.from_dict(ckpt.meta["config"]))
    rebuilt.load_state_dict(ckpt.params)
    rebuilt.save_pretrained(tmp_path / "out")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "src" / name).read_bytes(), name


def test_an_old_checkpoint_config_without_norm_eps_still_loads():
    d = GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=8).to_dict()
    del d["norm_eps"]
    assert GPTConfig.from_dict(d).norm_eps is None
