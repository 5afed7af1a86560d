"""Parameter counts equal transformers' ``num_parameters()`` for every supported model_type, on models built on
the meta device (no memory, nothing downloaded): hypothesis-drawn small configs with each option that changes a
count, and the named famous models at full size. Skips without transformers (CI installs it)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npformer.size import count_params, shape_from_hf_config
from npformer.size.presets import HF_PRESETS, preset_shape

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

AUTO = {"gpt2": "AutoModelForCausalLM", "llama": "AutoModelForCausalLM", "mistral": "AutoModelForCausalLM",
        "mixtral": "AutoModelForCausalLM", "t5": "AutoModelForSeq2SeqLM", "bert": "AutoModel", "vit": "AutoModel"}


def transformers_count(config: dict) -> int:
    """transformers' num_parameters() of the model it builds from ``config``, on the meta device."""
    fields = dict(config)
    model_type = fields.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        model = getattr(transformers, AUTO[model_type]).from_config(hf_config)
    return model.num_parameters()


@st.composite
def hf_configs(draw):
    """Small configs of every supported model_type, each option that changes a count drawn."""
    kind = draw(st.sampled_from(sorted(AUTO)))
    heads = draw(st.integers(1, 4))
    head_dim = 2 * draw(st.integers(1, 4))
    width = heads * head_dim
    small = st.integers(1, 3)
    vocab = draw(st.integers(5, 60))
    if kind == "gpt2":
        return dict(model_type=kind, vocab_size=vocab, n_positions=draw(st.integers(4, 40)), n_embd=width,
                    n_layer=draw(small), n_head=heads, n_inner=draw(st.none() | st.integers(1, 40)),
                    tie_word_embeddings=draw(st.booleans()))
    if kind in ("llama", "mistral", "mixtral"):
        kv = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0]))
        config = dict(model_type=kind, vocab_size=vocab, hidden_size=width, intermediate_size=draw(st.integers(1, 40)),
                      num_hidden_layers=draw(small), num_attention_heads=heads, num_key_value_heads=kv,
                      tie_word_embeddings=draw(st.booleans()), max_position_embeddings=64)
        if draw(st.booleans()):
            config["head_dim"] = 2 * draw(st.integers(1, 5))  # a head size other than width / heads
        if kind == "llama":
            config.update(attention_bias=draw(st.booleans()), mlp_bias=draw(st.booleans()))
        if kind == "mixtral":
            experts = draw(st.integers(1, 4))
            config.update(num_local_experts=experts, num_experts_per_tok=draw(st.integers(1, experts)))
        return config
    if kind == "bert":
        return dict(model_type=kind, vocab_size=vocab, hidden_size=width, num_hidden_layers=draw(small),
                    num_attention_heads=heads, intermediate_size=draw(st.integers(1, 40)),
                    max_position_embeddings=draw(st.integers(4, 40)), type_vocab_size=draw(st.integers(1, 3)))
    if kind == "t5":
        return dict(model_type=kind, vocab_size=vocab, d_model=width, d_kv=draw(st.integers(1, 6)),
                    d_ff=draw(st.integers(1, 40)), num_layers=draw(small), num_decoder_layers=draw(small),
                    num_heads=heads, relative_attention_num_buckets=draw(st.integers(2, 16)),
                    feed_forward_proj=draw(st.sampled_from(["relu", "gated-gelu"])),
                    tie_word_embeddings=draw(st.booleans()))
    patch = draw(st.integers(1, 4))
    return dict(model_type=kind, hidden_size=width, num_hidden_layers=draw(small), num_attention_heads=heads,
                intermediate_size=draw(st.integers(1, 40)), image_size=patch * draw(st.integers(1, 4)),
                patch_size=patch, num_channels=draw(st.integers(1, 3)), qkv_bias=draw(st.booleans()),
                pooler_output_size=draw(st.none() | st.integers(1, 20)))


@settings(max_examples=40)
@given(config=hf_configs())
def test_counts_equal_transformers(config):
    assert count_params(shape_from_hf_config(config)) == transformers_count(config), config


@pytest.mark.parametrize("name", sorted(HF_PRESETS))
def test_famous_models_equal_transformers(name):
    assert count_params(preset_shape(name)) == transformers_count(HF_PRESETS[name])
