"""Mixtral and Mistral's sliding window from Hugging Face directories: a MixtralForCausalLM and a
MistralForCausalLM with a window shorter than the sequence, random weights written by transformers into tmp_path
(no network), read by npformer: logits equal transformers' (float32, 1e-4), greedy generation equal, and
save_pretrained writes a directory that transformers reads back to the same logits."""

import json

import numpy as np
import pytest

from npformer import backend
from npformer.decode.generate import generate
from npformer.models import GPT, GPTConfig

V, T = 23, 12  # widths are multiples of 4: transformers groups experts with torch._grouped_mm (16-byte strides)
LOGIT_TOL = dict(rtol=1e-4, atol=1e-4)
CASES = {
    "mixtral": ("MixtralConfig", dict(hidden_size=16, intermediate_size=12, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5)),
    "mixtral-top1-window": ("MixtralConfig", dict(hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                                                  num_attention_heads=2, num_key_value_heads=1,
                                                  max_position_embeddings=32, num_local_experts=3,
                                                  num_experts_per_tok=1, sliding_window=5)),
    "mistral-window": ("MistralConfig", dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=32, sliding_window=4)),
}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf_moe")
    out = {}
    for i, (case, (config_class, kwargs)) in enumerate(CASES.items()):
        torch.manual_seed(100 + i)
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_equal_transformers(hf_dirs, case):
    path, theirs = hf_dirs[case]
    ours = GPT.from_pretrained(path)
    cfg = ours.config
    if case.startswith("mixtral"):
        assert (cfg.ffn_kind, cfg.expert_kind, cfg.router, cfg.capacity_factor) == ("moe", "swiglu", "mixtral", None)
        sizes = CASES[case][1]
        assert (cfg.n_experts, cfg.top_k) == (sizes["num_local_experts"], sizes["num_experts_per_tok"])
    window = CASES[case][1].get("sliding_window")
    assert cfg.window == window and cfg.block_size == 32
    idx = np.random.default_rng(0).integers(0, V, size=(2, T))  # T = 12 > every window here
    got, want = backend.to_numpy(ours.forward(idx)), _torch_logits(theirs, idx)
    np.testing.assert_allclose(got, want, **LOGIT_TOL)
    if window is not None:  # the window matters here: the same weights without it compute something else
        full = GPT.from_pretrained(path)
        for block in full.blocks:
            block.attn.window = None
        assert np.abs(backend.to_numpy(full.forward(idx)) - want).max() > 100 * LOGIT_TOL["atol"]


@pytest.mark.parametrize("case", ["mixtral", "mixtral-top1-window"])
def test_greedy_generation_equals_transformers(hf_dirs, case):
    import torch

    path, theirs = hf_dirs[case]
    ours = GPT.from_pretrained(path)
    prompt = np.random.default_rng(1).integers(0, V, size=4)
    got = generate(ours, prompt, max_new_tokens=10, temperature=0)[0]
    with torch.no_grad():
        want = theirs.generate(torch.from_numpy(prompt[None]), max_new_tokens=10, do_sample=False,
                               pad_token_id=0)[0].numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_pretrained_round_trips_through_transformers(hf_dirs, case, tmp_path):
    transformers = pytest.importorskip("transformers")
    path, theirs = hf_dirs[case]
    ours = GPT.from_pretrained(path)
    written = ours.save_pretrained(tmp_path)
    assert "config.json" in written
    # the source config comes back unchanged, and so do the tensors (byte for byte)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads((path / "config.json").read_text())
    assert (tmp_path / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    idx = np.random.default_rng(2).integers(0, V, size=(1, T))
    np.testing.assert_allclose(_torch_logits(back, idx), _torch_logits(theirs, idx), rtol=0, atol=0)


def test_an_npformer_moe_model_is_written_as_mixtral(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = GPTConfig.preset("llama-style", vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=16,
                              ffn_kind="moe", expert_kind="swiglu", n_experts=3, top_k=2, ffn_hidden=8, window=6)
    rng = np.random.default_rng(3)
    ours = GPT(config)
    for p in ours.parameters():
        p.data[...] = backend.asarray(rng.normal(0.0, 0.3, size=p.shape), dtype=p.data.dtype)
    ours.save_pretrained(tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert (hf["model_type"], hf["num_local_experts"], hf["num_experts_per_tok"], hf["sliding_window"]) == \
        ("mixtral", 3, 2, 6)
    assert hf["output_router_logits"] is True and hf["router_aux_loss_coef"] == pytest.approx(0.01 / 2)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    idx = rng.integers(0, V, size=(2, T))
    ours.eval()
    np.testing.assert_allclose(backend.to_numpy(ours.forward(idx)), _torch_logits(theirs, idx), **LOGIT_TOL)
    back = GPT.from_pretrained(tmp_path)
    assert back.config.aux_loss_coef == pytest.approx(0.01) and back.config.window == 6


@pytest.mark.parametrize("changes, message", [
    (dict(router_jitter_noise=0.1), "router_jitter_noise"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok"),
    (dict(sliding_window=0), "sliding_window"),
])
def test_mixtral_keys_npformer_does_not_compute_are_refused(hf_dirs, tmp_path, changes, message):
    path, _ = hf_dirs["mixtral"]
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **changes}))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(tmp_path)
