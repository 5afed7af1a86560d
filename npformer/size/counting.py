"""Parameters, FLOPs and memory of a ModelShape: the formulas, each written once.

Shapes: B batch, T context (tokens per sequence), C width, H query heads, Hkv key/value heads, D head size,
F feed-forward width, V vocabulary, L layers of a stack, b bytes per value of the dtype.

Parameters   counted as transformers' ``num_parameters()`` and npformer's ``Module.num_parameters()`` count
             them: every tensor once (a tied LM head is the token table, counted once). Components:
             embeddings (token, position, token-type tables; ViT's patch projection), attention (q, k, v and
             output projections, their biases, T5's relative bias), feed-forward (every expert and the router),
             norms (every LayerNorm / RMSNorm), head (an untied LM head, BERT's and ViT's pooler, npformer's MLM
             bias and classifier).
Active       the parameters one token uses: a mixture-of-experts layer counts its router and k of its E experts.
FLOPs        per token, forward:
                 2 * W  +  sum over attention layers of 4 * T_k * H * D
             W: the matrix-product weights a token passes through (the active experts' and the router's, the
             LM head's even when it is the tied token table, ViT's patch projection; not the tables looked up),
             one multiply and one add each; 4 T_k H D: the scores Q K^T and the weighted values P V, each
             2 T_k H D per token, counted over the whole T x T (no saving for the causal half), T_k = T for
             self- and cross-attention (an encoder-decoder is counted per target token with a source of the same
             length T: the encoder's FLOPs per source token plus the decoder's per target token); with a sliding
             window W (Mistral), T_k = min(T, W). Biases, norms, softmax and activations (O(C) per token) are
             left out.
             Training = 3 x forward (the backward pass costs two forwards: one product for the input's gradient,
             one for the weights'); with activation recomputation the layers' forward runs once more: + 1 x the
             layers' forward.
Memory       for training at (B, T), in bytes of the dtype: parameters N b, gradients N b, AdamW's two moments
             2 N b (npformer keeps them in the parameters' dtype), and activations: what npformer's layers keep
             for the backward pass (``kept_per_token``, per layer below) for B T tokens, plus the backward's
             largest working set (the logits' gradient, or one attention layer's dP and dS). With recomputation
             each layer keeps only its input (C per token) and one layer at a time is rebuilt.
KV cache     per token of generation: 2 (keys and values) * Hkv * D * L * b over the self-attention layers of
             the decoder; an encoder-decoder's cross-attention keys and values are computed once per source
             token and reported apart. A sliding-window model's cache (npformer's RollingKVCache) holds at most
             W positions per sequence: ``kv_cache_window(shape)``, the report's ``kv_cache_window``.
"""

from __future__ import annotations

from .shapes import AttentionShape, FeedForwardShape, LayerShape, ModelShape, StackShape

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "fp8": 1}
COMPONENTS = ("embeddings", "attention", "feed_forward", "norms", "head")


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"size: unknown dtype {dtype!r}; dtypes: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


# ---------------------------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------------------------
def params_by_component(shape: ModelShape, active: bool = False) -> dict[str, int]:
    """{component: parameters}; ``active``: a mixture of experts counts the experts one token uses."""
    out = dict.fromkeys(COMPONENTS, 0)
    out["embeddings"] = shape.embedding_params + shape.embedding_weights
    out["norms"] = shape.extra_norm_params
    out["head"] = shape.head_params
    for stack in shape.stacks:
        layer = stack.layer
        cross = layer.cross.params if layer.cross is not None else 0
        out["attention"] += stack.n_layer * (layer.attention.params + cross) + stack.attention_extra
        ffn = layer.ffn.params_active if active else layer.ffn.params
        out["feed_forward"] += stack.n_layer * ffn
        out["norms"] += stack.n_layer * layer.norm_params + stack.final_norm_params
    return out


def count_params(shape: ModelShape) -> int:
    return sum(params_by_component(shape).values())


def count_params_active(shape: ModelShape) -> int:
    return sum(params_by_component(shape, active=True).values())


# ---------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------
def _scores_flops(attention: AttentionShape, T_k: int) -> int:
    """Q K^T and P V for one query: 2 T_k H D each (T_k: the keys it sees, at most the window)."""
    return 4 * attention.keys_seen(T_k) * attention.n_head * attention.head_dim


def layer_flops_forward(layer: LayerShape, T: int) -> int:
    """One layer's forward FLOPs per token at context T."""
    flops = 2 * (layer.attention.weights + layer.ffn.weights_active) + _scores_flops(layer.attention, T)
    if layer.cross is not None:
        flops += 2 * layer.cross.weights + _scores_flops(layer.cross, T)
    return flops


def flops_per_token(shape: ModelShape, T: int) -> dict[str, int]:
    """{"forward", "training", "training_recompute"}: FLOPs per token at context T (see the module docstring)."""
    layers = sum(stack.n_layer * layer_flops_forward(stack.layer, T) for stack in shape.stacks)
    forward = layers + 2 * (shape.head_weights + shape.embedding_weights)
    return dict(forward=forward, training=3 * forward, training_recompute=3 * forward + layers)


# ---------------------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------------------
def _ffn_kept(ffn: FeedForwardShape, b: int) -> float:
    """Bytes per token the feed-forward keeps: its input, the activation's cache, the second product's input.
    ReLU keeps a boolean mask (1 byte a value), GELU its input, a gated unit both halves of its input."""
    F = ffn.hidden * ffn.experts_per_token
    activation = F * 1 if ffn.activation == "relu" else (2 * F * b if ffn.gated else F * b)
    return ffn.d_model * b + activation + F * b


def _attention_kept(attention: AttentionShape, T_k: int, flash: bool, b: int) -> float:
    """Bytes per query token: the input, q (and k, v per key token: T_k = T), the scaled queries, the output
    (the next product's input too), and the probabilities P (H T_k) or, with flash attention, one log-sum-exp
    per head."""
    H, Hkv, D = attention.n_head, attention.n_kv_head, attention.head_dim
    # a sliding window keeps P as a band of W keys per query (npformer's fast tier)
    values = attention.d_model + (H + 2 * Hkv) * D + 2 * H * D + (H if flash else H * attention.keys_seen(T_k))
    return values * b


def kept_per_token(layer: LayerShape, T: int, flash: bool, b: int) -> float:
    """Bytes one layer keeps for backward per token (npformer's fast tier; no dropout): each norm its normalised
    input and one reciprocal deviation, then attention, cross-attention and the feed-forward."""
    kept = layer.n_norms * (layer.attention.d_model + 1) * b + _attention_kept(layer.attention, T, flash, b)
    if layer.cross is not None:
        kept += _attention_kept(layer.cross, T, flash, b)
    return kept + _ffn_kept(layer.ffn, b)


def training_memory(shape: ModelShape, B: int, T: int, dtype: str = "float32", flash: bool | None = None) -> dict:
    """Bytes to train at (B, T): parameters, gradients, AdamW state, activations with and without recomputation,
    and the totals. ``flash``: npformer's flash attention (default: the shape's ``attn_impl``)."""
    b = dtype_bytes(dtype)
    flash = shape.attn_impl == "flash" if flash is None else flash
    N = count_params(shape)
    tokens = B * T
    C = shape.d_model
    # after the last layer: the final norm's cache (pre-LN), the head's input, the logits and the loss's
    # bookkeeping (log-sum-exp, targets, weights, ids: 6 values)
    final_norm = C + 1 if shape.stacks[-1].final_norm_params else 0
    head = (final_norm + C + shape.logits_per_token + 6) * b
    layers = [(stack.n_layer, kept_per_token(stack.layer, T, flash, b)) for stack in shape.stacks]
    kept = sum(n * per_layer for n, per_layer in layers) + head
    kept_recompute = sum(n * C * b for n, _ in layers) + max(per_layer for _, per_layer in layers) + head
    # the backward's largest working set beside what is kept: the logits' gradient (V) and the head's input
    # gradient, or one attention layer's dP and dS (2 H T) beside dq, dk, dv
    working = 0
    for stack in shape.stacks:
        a = stack.layer.attention
        working = max(working, (0 if flash else 2 * a.n_head * a.keys_seen(T)) + (a.n_head + 2 * a.n_kv_head)
                      * a.head_dim)
    working = max(working, shape.logits_per_token + C) * b
    activations = tokens * (kept + working)
    activations_recompute = tokens * (kept_recompute + working)
    states = dict(parameters=N * b, gradients=N * b, adamw=2 * N * b)
    total = sum(states.values())
    return dict(**states, activations=int(activations), activations_recompute=int(activations_recompute),
                total=int(total + activations), total_recompute=int(total + activations_recompute))


def kv_cache_bytes_per_token(shape: ModelShape, dtype: str = "float16") -> dict:
    """{"self": bytes per generated token over the decoder's self-attention (None for an encoder alone),
    "cross": bytes per source token of an encoder-decoder's cross-attention keys and values (None otherwise)}."""
    b = dtype_bytes(dtype)
    decoder: StackShape | None = shape.stack("decoder")
    if decoder is None:
        return {"self": None, "cross": None}
    a = decoder.layer.attention
    per_layer = 2 * a.n_kv_head * a.head_dim * b
    cross = decoder.layer.cross
    return {"self": decoder.n_layer * per_layer,
            "cross": decoder.n_layer * 2 * cross.n_kv_head * cross.head_dim * b if cross is not None else None}


def kv_cache_window(shape: ModelShape) -> int | None:
    """The most positions a sequence's KV cache holds: the decoder's sliding window W (None: every position)."""
    decoder = shape.stack("decoder")
    return None if decoder is None else decoder.layer.attention.window
