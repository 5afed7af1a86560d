"""The calculator counts what npformer builds: parameters (by component) for every config hypothesis draws, the
FLOPs of the matrix products a token passes through, the KV cache npformer allocates, and the activations its
layers keep for backward; and the published counts of the famous models."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from npformer import backend
from npformer.decode.kv_cache import KVCache
from npformer.models import GPT, Encoder, EncoderDecoder, GPTConfig
from npformer.nn import Module
from npformer.size import count_params, count_params_active, flops_per_token, kv_cache_bytes_per_token, shape_of
from npformer.size.counting import params_by_component, training_memory
from npformer.size.presets import PRESET_NAMES, preset_shape

from ..strategies import encoder_configs, gpt_configs, seq2seq_configs


def component(name: str) -> str:
    """Which of the calculator's components an npformer parameter belongs to, read from its name alone."""
    parts = name.split(".")
    if "attn" in parts or "cross" in parts:
        return "attention"
    if "ffn" in parts:
        return "feed_forward"
    if any(part.startswith("norm") or part.endswith("norm_f") for part in parts):
        return "norms"
    if parts[0] in ("lm_head", "mlm_bias", "cls_head", "out_proj"):
        return "head"
    assert parts[0] in ("wte", "wpe", "embed", "tgt_embed", "encoder"), name
    return "embeddings"


def built_components(model) -> dict:
    out = dict.fromkeys(("embeddings", "attention", "feed_forward", "norms", "head"), 0)
    for name, p in model.named_parameters():
        out[component(name)] += p.size
    return out


def check_counts(model):
    shape = shape_of(model.config)
    assert count_params(shape) == model.num_parameters()
    assert params_by_component(shape) == built_components(model)
    assert count_params_active(shape) == model.num_parameters()  # dense configs: every parameter is active


@settings(max_examples=25)
@given(cfg=gpt_configs(max_vocab=50, max_block=16))
def test_gpt_count_equals_the_built_model(cfg):
    check_counts(GPT(cfg))


@given(cfg=encoder_configs())
def test_encoder_count_equals_the_built_model(cfg):
    check_counts(Encoder(cfg))


@given(cfg=seq2seq_configs())
def test_encoder_decoder_count_equals_the_built_model(cfg):
    check_counts(EncoderDecoder(cfg))


@given(cfg=gpt_configs(max_vocab=50, max_block=16))
def test_forward_flops_are_the_matrix_products_a_token_passes_through(cfg):
    """2 x every weight matrix a token is multiplied by (the tied token table once, as the LM head; never the
    position table) + 4 T C per layer for Q K^T and P V, counted from the built model's parameters."""
    model = GPT(cfg)
    untied_table = cfg.tie_embeddings is False
    weights = sum(p.size for name, p in model.named_parameters()
                  if p.data.ndim == 2 and not name.startswith("wpe") and not (untied_table and name.startswith("wte")))
    T = cfg.block_size
    flops = flops_per_token(shape_of(cfg), T)
    assert flops["forward"] == 2 * weights + 4 * cfg.n_layer * T * cfg.n_embd
    assert flops["training"] == 3 * flops["forward"]
    assert flops["training_recompute"] == flops["training"] + flops["forward"] - 2 * cfg.n_embd * cfg.vocab_size


def test_training_flops_match_the_benchmarks_estimate():
    """benchmarks/train_step.py's MFU uses 6 N + 12 L T C per token; without biases and position tables, N is the
    matrix weights plus the norms' C per norm, which the calculator (rightly) leaves out."""
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False, positions="rope")
    n = GPT(cfg).num_parameters()
    norms = (2 * cfg.n_layer + 1) * cfg.n_embd
    assert flops_per_token(shape_of(cfg), 64)["training"] == 6 * (n - norms) + 12 * 4 * 64 * 128


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_kv_cache_bytes_are_what_npformer_allocates(n_kv_head):
    cfg = GPTConfig(vocab_size=20, block_size=32, n_layer=3, n_head=4, n_kv_head=n_kv_head, n_embd=32)
    caches = [KVCache(1, n_kv_head, cfg.block_size, cfg.head_dim, dtype=np.float32) for _ in range(cfg.n_layer)]
    per_token = sum(c.nbytes for c in caches) / cfg.block_size
    assert kv_cache_bytes_per_token(shape_of(cfg), "float32") == {"self": per_token, "cross": None}
    assert kv_cache_bytes_per_token(shape_of(cfg), "float16")["self"] == per_token / 2


# ---------------------------------------------------------------------------------------------------------------
# activations: what npformer's layers keep for backward, measured by walking every declared cache
# ---------------------------------------------------------------------------------------------------------------
def kept_bytes(model) -> int:
    """Bytes of every distinct array (by its base buffer) held in the declared caches, parameters excluded."""
    params = set()
    for p in model.parameters():
        base = p.data
        while base.base is not None:
            base = base.base
        params.add(id(base))
    found: dict = {}

    def walk(obj, seen):
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in params:
                found[id(base)] = base.nbytes
        elif isinstance(obj, (tuple, list)) and id(obj) not in seen:
            seen.add(id(obj))
            for item in obj:
                walk(item, seen)

    for m in model.modules():
        assert isinstance(m, Module)
        for attr in m.caches:
            walk(getattr(m, attr), set())
    return sum(found.values())


@pytest.mark.parametrize("options", [
    dict(), dict(ffn_kind="swiglu"), dict(ffn_kind="relu"), dict(attn_impl="flash"), dict(n_kv_head=2),
    dict(norm_placement="post"), dict(positions="rope", bias=False, tie_embeddings=False),
])
def test_activation_estimate_is_what_the_caches_keep(options):
    """The calculator's activations, less the backward's working set it adds, within 2% of the bytes npformer's
    caches hold after a loss (fast tier, float32; RoPE's small cos and sin tables are left out)."""
    cfg = GPTConfig(vocab_size=40, block_size=32, n_layer=3, n_head=4, n_embd=64, kernels="fast", **options)
    with backend.use_backend("numpy"):  # measured on the host, whatever the suite's default backend
        model = GPT(cfg)
    B, T = 3, 32
    rng = np.random.default_rng(0)
    model.loss(rng.integers(0, 40, (B, T)), rng.integers(0, 40, (B, T)))
    measured = kept_bytes(model)
    shape = shape_of(cfg)
    a = shape.stacks[0].layer.attention
    working = max((0 if cfg.attn_impl == "flash" else 2 * a.n_head * T) + (a.n_head + 2 * a.n_kv_head) * a.head_dim,
                  cfg.vocab_size + cfg.n_embd) * 4
    estimate = training_memory(shape, B, T)["activations"] - B * T * working
    assert estimate == pytest.approx(measured, rel=0.02)


def test_recomputation_keeps_less():
    shape = shape_of(GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384))
    m = training_memory(shape, 16, 256)
    assert m["activations_recompute"] < m["activations"] / 3
    assert m["total"] == m["parameters"] + m["gradients"] + m["adamw"] + m["activations"]
    assert m["parameters"] == 4 * 10_770_816 and m["adamw"] == 8 * 10_770_816


# ---------------------------------------------------------------------------------------------------------------
# the famous models: their published counts (model cards, transformers' num_parameters())
# ---------------------------------------------------------------------------------------------------------------
PUBLISHED = {
    "gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200,
    "gpt3-175b": 174_604_259_328, "bert-base": 109_482_240, "bert-large": 335_141_888,
    "llama-2-7b": 6_738_415_616, "llama-2-70b": 68_976_648_192, "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704, "t5-base": 222_903_552, "vit-b-16": 86_389_248,
    "baby": 809_856, "shakespeare-char": 10_770_816, "transformer-base": 63_082_496,
}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_count_what_was_published(name):
    assert count_params(preset_shape(name)) == PUBLISHED[name]


def test_mixtral_uses_two_experts_per_token():
    shape = preset_shape("mixtral-8x7b")
    assert count_params_active(shape) == 12_879_925_248  # "12.9B active parameters"
    dense = dataclasses.replace(shape.stacks[0].layer.ffn, n_experts=1, experts_per_token=1, router=False)
    assert shape.stacks[0].layer.ffn.params_active - dense.params == 4096 * 8 + 3 * 4096 * 14336  # router, 1 more


def test_gpt2_small_is_124m_not_117m():
    """The GPT-2 paper's "117M": OpenAI later wrote that its original counts were wrong; the released small model
    has 124,439,808 parameters, the token table counted once though it is also the LM head."""
    by = params_by_component(preset_shape("gpt2"))
    assert by == {"embeddings": 50257 * 768 + 1024 * 768, "attention": 12 * (768 * 3 * 768 + 3 * 768 + 768 * 768 + 768),
                  "feed_forward": 12 * (2 * 768 * 3072 + 3072 + 768), "norms": 12 * 4 * 768 + 2 * 768, "head": 0}
