"""The calculator on mixture-of-experts GPTs (total and active parameters equal what npformer builds) and on
sliding-window attention (scores' FLOPs and the KV cache bounded by the window), npformer's configs and Hugging
Face's Mistral / Mixtral config.json alike."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from npformer.models import GPT, GPTConfig
from npformer.size import count_params, count_params_active, flops_per_token, shape_from_hf_config, shape_of, size_of
from npformer.size.counting import params_by_component


@st.composite
def moe_configs(draw):
    E = draw(st.integers(1, 5))
    n_head = draw(st.integers(1, 2))
    return GPTConfig(vocab_size=draw(st.integers(2, 40)), block_size=draw(st.integers(1, 16)),
                     n_layer=draw(st.integers(1, 3)), n_head=n_head, n_embd=n_head * draw(st.sampled_from([2, 4])),
                     ffn_hidden=draw(st.integers(1, 9)), ffn_kind="moe", n_experts=E, top_k=draw(st.integers(1, E)),
                     expert_kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])), bias=draw(st.booleans()),
                     norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
                     positions=draw(st.sampled_from(["learned", "rope"])), tie_embeddings=draw(st.booleans()),
                     window=draw(st.sampled_from([None, 1, 3])))


def feed_forward_params(model) -> int:
    return sum(p.size for name, p in model.named_parameters() if ".ffn." in name)


@settings(max_examples=25)
@given(cfg=moe_configs())
def test_moe_counts_equal_the_built_model(cfg):
    model = GPT(cfg)
    shape = shape_of(cfg)
    assert count_params(shape) == model.num_parameters()
    assert params_by_component(shape)["feed_forward"] == feed_forward_params(model)
    # one token uses the gate and k of the E experts of each layer
    expert = model.blocks[0].ffn
    per_expert = sum(p.size for p in (expert.w_fc, expert.w_proj, expert.b_fc, expert.b_proj) if p is not None) \
        // cfg.n_experts
    assert count_params_active(shape) == model.num_parameters() - cfg.n_layer * (cfg.n_experts - cfg.top_k) * per_expert


def test_moe_flops_count_k_experts_and_the_gate():
    cfg = GPTConfig.preset("moe", n_layer=2)  # C 128, F 512, E 4, k 2
    dense = dataclasses.replace(cfg, ffn_kind="gelu")
    T = 64
    extra = flops_per_token(shape_of(cfg), T)["forward"] - flops_per_token(shape_of(dense), T)["forward"]
    assert extra == 2 * cfg.n_layer * (1 * 2 * 128 * 512 + 128 * 4)  # one more expert of two matrices, the gate


def test_window_bounds_the_scores_and_the_kv_cache():
    cfg = GPTConfig.preset("llama-style", n_layer=2, n_embd=64, n_head=4, block_size=256)
    full, windowed = shape_of(cfg), shape_of(dataclasses.replace(cfg, window=32))
    assert count_params(full) == count_params(windowed)
    T, H, D = 256, 4, 16
    saved = flops_per_token(full, T)["forward"] - flops_per_token(windowed, T)["forward"]
    assert saved == 2 * 4 * (T - 32) * H * D  # two layers, Q K^T and P V over 224 fewer keys
    assert flops_per_token(full, 16)["forward"] == flops_per_token(windowed, 16)["forward"]  # T < W: no saving
    report = size_of(dataclasses.replace(cfg, window=32))
    assert report["kv_cache_window"] == 32 and "kv_cache_window" not in size_of(cfg)


def test_mistral_and_mixtral_config_json():
    mistral = dict(model_type="mistral", vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, sliding_window=64)
    shape = shape_from_hf_config(mistral)
    assert shape.stacks[0].layer.attention.window == 64
    assert size_of(mistral, context=256)["kv_cache_window"] == 64
    # a window as long as the context is no window; null is no window (Mistral v0.2+); left out, transformers'
    # default for Mistral is 4096 (v0.1's), for Mixtral none
    assert shape_from_hf_config({**mistral, "sliding_window": 512}).stacks[0].layer.attention.window is None
    assert shape_from_hf_config({**mistral, "sliding_window": None}).stacks[0].layer.attention.window is None
    long = {k: v for k, v in mistral.items() if k != "sliding_window"} | {"max_position_embeddings": 32768}
    assert shape_from_hf_config(long).stacks[0].layer.attention.window == 4096
    mixtral = {**mistral, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}
    mixtral.pop("sliding_window")
    shape = shape_from_hf_config(mixtral)
    ffn = shape.stacks[0].layer.ffn
    assert shape.stacks[0].layer.attention.window is None
    assert (ffn.n_experts, ffn.experts_per_token, ffn.router) == (4, 2, True)
    assert count_params(shape) - count_params_active(shape) == 2 * 2 * 3 * 32 * 64  # 2 layers, 2 idle experts
