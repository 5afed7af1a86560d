"""What a Transformer is made of, as numbers: the shapes the size calculator counts, from any source.

Shapes: C model width (d_model), H query heads, Hkv key/value heads, D head size, F feed-forward hidden width,
E experts (1: a dense feed-forward), k experts a token passes through, V vocabulary, L layers.

Every source (npformer's configs, a Hugging Face ``config.json``, the named presets) is turned into one
``ModelShape``; ``npformer.size.counting`` computes parameters, FLOPs and memory from it, and nothing else.
A ``weights`` property counts the matrix-product weights a token passes through (what FLOPs are made of), a
``params`` property every parameter (weights, biases and tables).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttentionShape:
    """One attention layer: q from a width-C input, k and v from a width-C_kv input (C itself for self-attention,
    the context's for cross-attention), the output projected back to C; with a sliding window W, each query sees
    only the last W keys (cost and cache bounded by W, not T).

    qkv_bias / out_bias: biases of the q, k, v projections / of the output projection. extra: parameters that
    are no matrix product (T5's relative position bias table, counted where it lives)."""

    d_model: int  # C
    n_head: int  # H
    n_kv_head: int  # Hkv
    head_dim: int  # D
    d_kv_in: int  # C_kv
    qkv_bias: bool
    out_bias: bool
    extra: int = 0
    window: int | None = None  # sliding window W: a query sees at most the last W keys (Mistral); None: all

    def keys_seen(self, T: int) -> int:
        """How many keys one query sees at context T (the scores' length): T, or the window W if shorter."""
        return T if self.window is None else min(T, self.window)

    @property
    def weights(self) -> int:
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        return self.d_model * H * D + self.d_kv_in * 2 * Hkv * D + H * D * self.d_model

    @property
    def params(self) -> int:
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        biases = (H * D + 2 * Hkv * D if self.qkv_bias else 0) + (self.d_model if self.out_bias else 0)
        return self.weights + biases + self.extra


@dataclass(frozen=True)
class FeedForwardShape:
    """The position-wise feed-forward network: C -> F -> C, gated (SwiGLU, GeGLU: three matrices) or not (two),
    as one dense network (E = 1, no router) or E experts of which a router (a (C, E) matrix) picks k per token."""

    d_model: int  # C
    hidden: int  # F
    gated: bool
    bias: bool  # biases on the hidden layer and the output
    n_experts: int = 1  # E
    experts_per_token: int = 1  # k
    router: bool = False
    router_bias: bool = False
    activation: str = "gelu"  # "relu" keeps a boolean mask for backward, "gelu" its input, gated ones two inputs

    @property
    def expert_weights(self) -> int:
        return (3 if self.gated else 2) * self.d_model * self.hidden

    @property
    def expert_params(self) -> int:
        biases = (2 * self.hidden if self.gated else self.hidden) + self.d_model if self.bias else 0
        return self.expert_weights + biases

    @property
    def router_weights(self) -> int:
        return self.d_model * self.n_experts if self.router else 0

    @property
    def params(self) -> int:
        router = self.router_weights + (self.n_experts if self.router and self.router_bias else 0)
        return self.n_experts * self.expert_params + router

    @property
    def params_active(self) -> int:
        """Parameters one token uses: the router and k experts."""
        return self.params - (self.n_experts - self.experts_per_token) * self.expert_params

    @property
    def weights_active(self) -> int:
        return self.experts_per_token * self.expert_weights + self.router_weights


@dataclass(frozen=True)
class LayerShape:
    """One Transformer layer: self-attention, optional cross-attention, feed-forward, and its norms' sizes
    (LayerNorm with bias: 2 C each; RMSNorm or LayerNorm without bias: C each)."""

    attention: AttentionShape
    ffn: FeedForwardShape
    norm_params: int  # all the layer's norms together
    n_norms: int
    causal: bool
    cross: AttentionShape | None = None
    norm_placement: str = "pre"  # "pre" or "post": what the activations kept for backward look like


@dataclass(frozen=True)
class StackShape:
    """L identical layers ("decoder" or "encoder"), the final norm after them (0 if none), and parameters that
    belong to the stack's attention once (T5's relative position bias, in its first layer)."""

    name: str
    n_layer: int
    layer: LayerShape
    final_norm_params: int = 0
    attention_extra: int = 0


@dataclass(frozen=True)
class ModelShape:
    """A whole model.

    kind: "decoder" (generates; a KV cache), "encoder" (no generation) or "encoder-decoder" (stacks named
    "encoder" then "decoder"). Tables looked up rather than multiplied (token, position, token-type embeddings,
    ViT's class token) are ``embedding_params``; ``embedding_weights`` is a per-token matrix product inside the
    embedding (ViT's patch projection), whose biases are in ``embedding_params`` with the tables.
    ``head_params``: the parameters after the last stack that are counted (an untied LM head, BERT's pooler);
    ``head_weights``: the matrix a token's output passes through (the LM head, counted in FLOPs even when it is
    the tied token table). ``extra_norm_params``: norms outside the layers (BERT's embedding LayerNorm).
    ``logits_per_token``: the outputs a token's loss is computed from (V for a language-modelling head, 0 without
    one). ``max_positions``: the longest context (None: unlimited, as with RoPE).
    """

    name: str
    kind: str
    d_model: int
    vocab_size: int
    stacks: tuple[StackShape, ...]
    embedding_params: int
    head_params: int
    head_weights: int
    embedding_weights: int = 0
    extra_norm_params: int = 0
    max_positions: int | None = None
    logits_per_token: int = 0
    attn_impl: str = "plain"  # npformer's attention path ("flash" keeps no probabilities for backward)
    notes: tuple[str, ...] = ()

    def stack(self, name: str) -> StackShape | None:
        for s in self.stacks:
            if s.name == name:
                return s
        return None
