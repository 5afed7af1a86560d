"""Hugging Face ``config.json`` <-> GPTConfig, for the model types whose maths npformer's GPT computes exactly.

    gpt2              pre-LN, LayerNorm, learned positions, GELU (tanh or erf) or ReLU, biases, tied head
    llama, mistral    pre-RMSNorm, SwiGLU, RoPE (half-split, as transformers' rotate_half), grouped-query
                      attention, no biases (or biases on every projection), untied head (or tied); Mistral's
                      sliding_window is GPTConfig.window
    mixtral           Mistral's with a mixture of experts: num_local_experts SwiGLU experts, num_experts_per_tok
                      per token, softmax over all logits, top-k, renormalised (npformer's router "mixtral"); no
                      capacity limit; its auxiliary loss (E sum_j sum_i f_ji P_i over the k choices j, = k times
                      npformer's) counts with router_aux_loss_coef when output_router_logits is true

A key that changes the maths in a way npformer does not compute (rotary scaling, soft-capping, attention scaled
per layer, ...) is a ValueError naming the key; keys that do not change the maths (dropout rates, token ids, the
initialiser's range) are kept, unread, for writing the file back. The original config travels in
``GPTConfig.extra["hf"]`` (and so in every npformer checkpoint of the model), so that ``save_pretrained`` writes
back the very file it read when the maths has not changed.
"""

from __future__ import annotations

import copy

from .config import GPTConfig

MODEL_TYPES = ("gpt2", "llama", "mistral", "mixtral")
# GPTConfig fields that config.json decides: a model whose fields equal those read from its source config writes
# that config back unchanged
WEIGHT_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "ffn_hidden", "ffn_kind",
                 "gelu_approximate", "norm", "norm_placement", "norm_eps", "positions", "rope_base", "bias",
                 "tie_embeddings", "window", "n_experts", "top_k", "expert_kind", "router", "aux_loss_coef")
# fields that from_pretrained(path, **overrides) may change: none of them changes what the weights compute
# (block_size only crops the context, as nanoGPT's crop_block_size does)
OVERRIDABLE = ("block_size", "dropout", "kernels", "attn_impl", "recompute", "loss_chunk", "seed", "aux_loss_coef",
               "z_loss_coef", "capacity_factor")
# GPT-2's activation_function -> (ffn_kind, gelu_approximate); the three tanh forms are one formula
GPT2_ACTIVATIONS = {"gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"), "gelu_fast": ("gelu", "tanh"),
                    "gelu": ("gelu", "none"), "relu": ("relu", "tanh")}
# keys of other families that change the maths, refused wherever they hold anything but their neutral value
EXOTIC_KEYS = ("alibi", "attn_logit_softcapping", "final_logit_softcapping", "logit_scale", "embedding_multiplier",
               "residual_multiplier", "attention_multiplier", "logits_scaling", "use_qk_norm", "qk_layernorm",
               "quantization_config", "no_rope_layers", "partial_rotary_factor", "rotary_pct", "parallel_attn",
               "use_parallel_residual", "new_decoder_architecture", "multi_query", "query_pre_attn_scalar")
_NEUTRAL = (None, False, 1, 1.0, [], {})
FLOAT_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def _unsupported(key: str, value, why: str = "changes the maths and is not supported") -> ValueError:
    return ValueError(f"from_pretrained: config.json key {key!r} = {value!r:.80} {why}")


def _get(hf: dict, *names, default=KeyError):
    """The first of ``names`` present in config.json (transformers accepts aliases, e.g. n_embd / hidden_size)."""
    for name in names:
        if name in hf and hf[name] is not None:
            return hf[name]
    if default is KeyError:
        raise ValueError(f"from_pretrained: config.json has no {names[0]!r} (model_type {hf.get('model_type')!r} "
                         "needs it)")
    return default


def _refuse_exotic(hf: dict) -> None:
    for key in EXOTIC_KEYS:
        if key in hf and hf[key] not in _NEUTRAL:
            raise _unsupported(key, hf[key])
    layer_types = hf.get("layer_types")
    if layer_types and any(t != "full_attention" for t in layer_types):
        raise _unsupported("layer_types", layer_types, "asks for attention other than full causal attention, which "
                           "npformer does not compute")


def _rope_base(hf: dict) -> float:
    """rope_theta, from transformers 5's rope_parameters or transformers 4's rope_theta; only plain RoPE."""
    scaling = hf.get("rope_scaling")
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else scaling
        if kind != "default":
            raise _unsupported("rope_scaling", scaling, "asks for rotary scaling; npformer computes plain RoPE only")
    params = hf.get("rope_parameters")
    if params is None:
        return float(hf.get("rope_theta", 10000.0))
    if not isinstance(params, dict):
        raise _unsupported("rope_parameters", params, "is not a mapping")
    if params.get("rope_type", "default") != "default":
        raise _unsupported("rope_parameters", params, "asks for rotary scaling "
                           f"{params.get('rope_type')!r}; npformer computes plain RoPE only")
    extra = {k: v for k, v in params.items() if k not in ("rope_type", "rope_theta") and v not in _NEUTRAL}
    if extra:
        raise _unsupported("rope_parameters", params, f"sets {sorted(extra)}; npformer computes plain RoPE only")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def gpt_config_from_hf(hf: dict, hf_extra: dict | None = None, **overrides) -> GPTConfig:
    """config.json (a dict) -> GPTConfig with dropout 0 (set ``dropout=`` to fine-tune with it).

    hf_extra: what else to keep in ``extra["hf"]`` beside the config (the tensor prefix, the file's dtype, the
    generation config). overrides: fields in OVERRIDABLE."""
    if not isinstance(hf, dict):
        raise ValueError(f"from_pretrained: config.json must hold a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"from_pretrained: config.json's model_type {model_type!r} is not supported; npformer "
                         f"reads {', '.join(MODEL_TYPES)}")
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise ValueError(f"from_pretrained: {', '.join(bad)} cannot be overridden (it is the pretrained model's "
                         f"shape or maths); overridable: {', '.join(OVERRIDABLE)}")
    _refuse_exotic(hf)
    fields = _gpt2_fields(hf) if model_type == "gpt2" else _llama_fields(hf)
    if model_type == "mixtral":
        fields.update(_mixtral_fields(hf))
    block_size = overrides.pop("block_size", None)
    if block_size is not None:
        if fields["positions"] == "learned" and block_size > fields["block_size"]:
            raise ValueError(f"from_pretrained: block_size={block_size} exceeds the {fields['block_size']} learned "
                             "position embeddings of the pretrained model")
        fields["block_size"] = block_size
    extra = {"hf": {"config": copy.deepcopy(hf), **(hf_extra or {})}}
    return GPTConfig(**{**fields, "dropout": 0.0, **overrides}, extra=extra)


def _gpt2_fields(hf: dict) -> dict:
    for key, neutral in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("add_cross_attention", False)):
        if hf.get(key, neutral) != neutral:
            raise _unsupported(key, hf[key])
    activation = hf.get("activation_function", "gelu_new")
    if activation not in GPT2_ACTIVATIONS:
        raise _unsupported("activation_function", activation, f"is not one of {sorted(GPT2_ACTIVATIONS)}")
    ffn_kind, approximate = GPT2_ACTIVATIONS[activation]
    n_embd = _get(hf, "n_embd", "hidden_size")
    return dict(vocab_size=_get(hf, "vocab_size"), block_size=_get(hf, "n_positions", "max_position_embeddings"),
                n_layer=_get(hf, "n_layer", "num_hidden_layers"), n_head=_get(hf, "n_head", "num_attention_heads"),
                n_embd=n_embd, ffn_hidden=hf.get("n_inner") or 4 * n_embd, ffn_kind=ffn_kind,
                gelu_approximate=approximate, norm="layernorm", norm_placement="pre",
                norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), positions="learned", bias=True,
                tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def _llama_fields(hf: dict) -> dict:
    if hf.get("hidden_act", "silu") != "silu":
        raise _unsupported("hidden_act", hf["hidden_act"], "is not silu (SwiGLU's gate)")
    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        key = "attention_bias" if attention_bias else "mlp_bias"
        raise _unsupported(key, True, "without the other: npformer puts biases on every projection or on none")
    n_embd, n_head = _get(hf, "hidden_size"), _get(hf, "num_attention_heads")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim * n_head != n_embd:
        raise _unsupported("head_dim", head_dim, f"is not hidden_size / num_attention_heads = {n_embd} / {n_head}")
    block_size = _get(hf, "max_position_embeddings")
    window = hf.get("sliding_window") if hf.get("use_sliding_window", True) else None
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise _unsupported("sliding_window", window, "is not a positive integer")
        if window >= block_size:  # a window as long as the context is full causal attention
            window = None
    return dict(window=window, vocab_size=_get(hf, "vocab_size"), block_size=block_size,
                n_layer=_get(hf, "num_hidden_layers"),
                n_head=n_head, n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=n_embd,
                ffn_hidden=_get(hf, "intermediate_size"), ffn_kind="swiglu", norm="rmsnorm", norm_placement="pre",
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)), positions="rope", rope_base=_rope_base(hf),
                bias=attention_bias, tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def _mixtral_fields(hf: dict) -> dict:
    if hf.get("router_jitter_noise", 0.0) not in _NEUTRAL + (0, 0.0):
        raise _unsupported("router_jitter_noise", hf["router_jitter_noise"], "adds noise to the router's logits in "
                           "training, which npformer does not compute")
    n_experts, top_k = _get(hf, "num_local_experts"), _get(hf, "num_experts_per_tok")
    if not isinstance(top_k, int) or not isinstance(n_experts, int) or not 1 <= top_k <= n_experts:
        raise _unsupported("num_experts_per_tok", top_k, f"is not an int in [1, num_local_experts={n_experts}]")
    # transformers' load-balancing loss sums E sum_i f_ji P_i over the k choices j: k times npformer's
    coef = float(hf.get("router_aux_loss_coef", 0.001)) * top_k if hf.get("output_router_logits") else 0.0
    return dict(ffn_kind="moe", n_experts=n_experts, top_k=top_k, expert_kind="swiglu", router="mixtral",
                capacity_factor=None, aux_loss_coef=coef, z_loss_coef=0.0)


# ---------------------------------------------------------------------------------------------------------------
# writing: GPTConfig -> config.json
# ---------------------------------------------------------------------------------------------------------------
def hf_model_type(config: GPTConfig) -> str:
    """The Hugging Face model type that computes what ``config`` computes: gpt2 or llama by shape (mistral when
    the model came from a mistral config); ValueError naming the fields when neither does."""
    source = _source(config)
    families = {"gpt2": dict(norm="layernorm", positions="learned", bias=True, norm_placement="pre", window=None),
                "llama": dict(norm="rmsnorm", positions="rope", ffn_kind="swiglu", norm_placement="pre"),
                "mixtral": dict(norm="rmsnorm", positions="rope", ffn_kind="moe", expert_kind="swiglu",
                                router="mixtral", norm_placement="pre", bias=False)}
    problems = []
    for name, needs in families.items():
        wrong = [f"{k}={getattr(config, k)!r} (needs {v!r})" for k, v in needs.items() if getattr(config, k) != v]
        if name == "gpt2" and config.ffn_kind not in ("gelu", "relu"):
            wrong.append(f"ffn_kind={config.ffn_kind!r} (needs 'gelu' or 'relu')")
        if name == "gpt2" and config.n_kv_head != config.n_head:
            wrong.append(f"n_kv_head={config.n_kv_head} (needs n_head={config.n_head})")
        if not wrong:
            if name == "llama" and (source.get("model_type") == "mistral" or config.window is not None):
                return "mistral"  # Llama has no sliding window; Mistral has one
            return name
        problems.append(f"not {name}: " + ", ".join(wrong))
    raise ValueError(f"save_pretrained: this GPT has no Hugging Face equivalent ({'; '.join(problems)})")


def _source(config: GPTConfig) -> dict:
    """The config.json the model was read from ({} for a model built here)."""
    hf = config.extra.get("hf") if isinstance(config.extra, dict) else None
    source = hf.get("config") if isinstance(hf, dict) else None
    return copy.deepcopy(source) if isinstance(source, dict) else {}


def hf_config(config: GPTConfig, dtype_name: str) -> dict:
    """The config.json for ``config`` with weights saved as ``dtype_name`` ("float32", "bfloat16", ...): the
    source's config unchanged (but its dtype) when the model computes what it computed, else the source's keys
    with every key the model decides rewritten."""
    model_type = hf_model_type(config)
    source = _source(config)
    same = False
    if source:
        try:
            read_back = gpt_config_from_hf(source)
            same = all(getattr(read_back, f) == getattr(config, f) for f in WEIGHT_FIELDS)
        except ValueError:
            same = False
    out = source if same else {**source, **_canonical(config, model_type, source)}
    dtype_key = "torch_dtype" if "torch_dtype" in out and "dtype" not in out else "dtype"
    if dtype_key in out or not source or dtype_name != "float32":  # a source without one stays without one
        out[dtype_key] = dtype_name
    return out


def _canonical(config: GPTConfig, model_type: str, source: dict) -> dict:
    C = config.n_embd
    if model_type == "gpt2":
        activation = {("gelu", "tanh"): "gelu_new", ("gelu", "none"): "gelu", ("relu", "tanh"): "relu",
                      ("relu", "none"): "relu"}[(config.ffn_kind, config.gelu_approximate)]
        if source.get("activation_function") in GPT2_ACTIVATIONS and \
                GPT2_ACTIVATIONS[source["activation_function"]] == GPT2_ACTIVATIONS[activation]:
            activation = source["activation_function"]
        return {"architectures": source.get("architectures", ["GPT2LMHeadModel"]), "model_type": "gpt2",
                "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": C,
                "n_layer": config.n_layer, "n_head": config.n_head,
                "n_inner": None if config.ffn_hidden == 4 * C else config.ffn_hidden,
                "activation_function": activation,
                "layer_norm_epsilon": 1e-5 if config.norm_eps is None else config.norm_eps,
                "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": 0.0,
                "tie_word_embeddings": config.tie_embeddings, "bos_token_id": source.get("bos_token_id"),
                "eos_token_id": source.get("eos_token_id")}
    architecture = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM"}
    out = {"architectures": source.get("architectures", [architecture[model_type]]), "model_type": model_type,
           "vocab_size": config.vocab_size, "hidden_size": C, "intermediate_size": config.ffn_hidden,
           "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
           "num_key_value_heads": config.n_kv_head, "head_dim": config.head_dim, "hidden_act": "silu",
           "max_position_embeddings": config.block_size,
           "rms_norm_eps": 1e-6 if config.norm_eps is None else config.norm_eps,
           "tie_word_embeddings": config.tie_embeddings, "attention_dropout": 0.0,
           "bos_token_id": source.get("bos_token_id"), "eos_token_id": source.get("eos_token_id")}
    if model_type == "llama":
        out.update(attention_bias=config.bias, mlp_bias=config.bias)
    elif config.bias:
        raise ValueError(f"save_pretrained: a {model_type} model has no biases, but this GPT has bias=True")
    if model_type in ("mistral", "mixtral"):
        out["sliding_window"] = config.window
    if model_type == "mixtral":  # transformers' aux loss is top_k times npformer's (see the module docstring)
        out.update(num_local_experts=config.n_experts, num_experts_per_tok=config.top_k, router_jitter_noise=0.0,
                   output_router_logits=config.aux_loss_coef > 0,
                   router_aux_loss_coef=config.aux_loss_coef / config.top_k if config.aux_loss_coef > 0
                   else source.get("router_aux_loss_coef", 0.001))
    if "rope_theta" in source and "rope_parameters" not in source:  # the source's (transformers 4) spelling
        out.update(rope_theta=config.rope_base, rope_scaling=None)
    else:
        out["rope_parameters"] = {"rope_theta": config.rope_base, "rope_type": "default"}
    return out
