"""GPTConfig: every choice of a decoder-only Transformer, validated, with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config_dicts import checked_fields
from ..functional.moe import EXPERT_KINDS, ROUTERS
from .tiers import check_kernels_field

# fields a checkpoint written before they existed may lack (each then takes its default)
FIELDS_ADDED_LATER = ("kernels", "norm_eps", "window", "n_experts", "top_k", "expert_kind", "router",
                      "capacity_factor", "aux_loss_coef", "z_loss_coef")

FFN_KINDS = ("relu", "gelu", "swiglu", "moe")
NORMS = ("layernorm", "rmsnorm")
PLACEMENTS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rope")
ATTENTION_IMPLS = ("plain", "flash")


@dataclass
class GPTConfig:
    """A decoder-only language model's shape and options.

    vocab_size V, block_size (context length) T_max, n_layer L, n_head H, n_kv_head Hkv (None: = H; fewer for
    grouped-query, 1 for multi-query attention), n_embd C, ffn_hidden F (None: 4 C).

    window W: sliding-window attention (each position sees the last W positions, itself included; Mistral's
    sliding_window); None: full causal attention.

    ffn_kind "moe": a mixture of experts in every block (npformer.nn.moe): n_experts E feed-forward networks of
    width F and activation expert_kind, top_k of them per token, chosen by router "mixtral" (softmax over the k
    chosen logits) or "switch" (softmax over all E, then top-k); capacity_factor (None: no limit) caps each
    expert's assignments in training at ceil(capacity_factor N k / E), dropping the rest (those tokens keep the
    residual stream only). The model's loss in training is the cross-entropy plus, per MoE layer,
    aux_loss_coef * E sum_i f_i P_i (load balancing) and z_loss_coef * mean(logsumexp(router logits)^2); in eval
    mode it is the cross-entropy alone. The n_experts ... z_loss_coef fields are ignored by other ffn_kinds.
    """

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    n_embd: int = 128
    ffn_hidden: int | None = None
    ffn_kind: str = "gelu"
    gelu_approximate: str = "tanh"  # "tanh" (GPT-2) or "none" (exact erf form, PyTorch's nn.GELU() default)
    norm: str = "layernorm"
    norm_placement: str = "pre"
    norm_eps: float | None = None  # the norms' epsilon; None: LayerNorm 1e-5, RMSNorm 1e-6
    positions: str = "learned"
    rope_base: float = 10000.0
    bias: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = True
    attn_impl: str = "plain"
    recompute: bool = False  # recompute each block's forward during backward, keeping only its input
    loss_chunk: int = 0  # > 0: LM head + loss as one op (fast tier: in chunks of this many tokens, never all logits)
    kernels: str | None = None  # "reference", "fast", or None: follow npformer.set_kernels (fast by default)
    window: int | None = None  # sliding-window attention over the last `window` positions; None: full causal
    n_experts: int = 4  # ffn_kind "moe" only, from here to z_loss_coef
    top_k: int = 2
    expert_kind: str = "gelu"  # each expert's activation: "relu", "gelu" or "swiglu"
    router: str = "mixtral"  # "mixtral" (top-k, then softmax over those k) or "switch" (softmax, then top-k)
    capacity_factor: float | None = None  # None or 0: no capacity limit (no token dropped)
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    seed: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes saved with the checkpoint

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.n_embd
        self.validate()

    def validate(self) -> None:
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "ffn_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not problems:
            if self.n_embd % self.n_head:
                problems.append(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
            if self.n_head % self.n_kv_head:
                problems.append(f"n_kv_head={self.n_kv_head} does not divide n_head={self.n_head}")
            if self.positions == "rope" and (self.n_embd // self.n_head) % 2:
                problems.append(f"RoPE needs an even head size, got n_embd/n_head = {self.n_embd // self.n_head}")
        for name, allowed in (("ffn_kind", FFN_KINDS), ("gelu_approximate", ("tanh", "none")), ("norm", NORMS),
                              ("norm_placement", PLACEMENTS), ("positions", POSITIONS),
                              ("attn_impl", ATTENTION_IMPLS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.norm_eps is not None and not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            problems.append(f"norm_eps must be a positive number or None, got {self.norm_eps!r}")
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or self.window < 1):
            problems.append(f"window must be a positive integer or None, got {self.window!r}")
        self._validate_moe(problems)
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.loss_chunk, int) or self.loss_chunk < 0:
            problems.append(f"loss_chunk must be a non-negative integer, got {self.loss_chunk!r}")
        check_kernels_field(self.kernels, problems)
        if problems:
            raise ValueError("GPTConfig: " + "; ".join(problems))

    def _validate_moe(self, problems: list) -> None:
        for name in ("n_experts", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.top_k, int) and isinstance(self.n_experts, int) and self.top_k > self.n_experts:
            problems.append(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")
        for name, allowed in (("expert_kind", EXPERT_KINDS), ("router", ROUTERS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        cf = self.capacity_factor
        if cf is not None and (isinstance(cf, bool) or not isinstance(cf, (int, float)) or not cf >= 0):
            problems.append(f"capacity_factor must be a number >= 0, or None (0 or None: no limit), got {cf!r}")
        for name in ("aux_loss_coef", "z_loss_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                problems.append(f"{name} must be a number >= 0, got {value!r}")

    def moe_options(self) -> dict | None:
        """The keyword arguments of npformer.nn.MoEFeedForward for ffn_kind "moe" (None for a dense model)."""
        if self.ffn_kind != "moe":
            return None
        return dict(n_experts=self.n_experts, top_k=self.top_k, kind=self.expert_kind, router=self.router,
                    capacity_factor=self.capacity_factor or None, aux_loss_coef=self.aux_loss_coef,
                    z_loss_coef=self.z_loss_coef)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "GPTConfig") -> "GPTConfig":
        """The config saved by ``to_dict`` (in a checkpoint, say): every field is checked (a mapping, no unknown or
        missing field, each of its type) before anything is built; errors name ``where`` and the field."""
        return cls(**checked_fields(cls, d, where, optional=FIELDS_ADDED_LATER))

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """"gpt2-style": pre-LN, LayerNorm, GELU, learned positions, biases, tied embeddings.
        "llama-style": pre-RMSNorm, SwiGLU, RoPE, grouped-query attention (Hkv = H/2 where possible), no biases,
        untied embeddings; takes ``window=W`` for Mistral-style sliding-window attention.
        "moe": gpt2-style with a mixture of experts in every block: 4 experts of width 4 C, 2 per token (Mixtral's
        router), capacity factor 1.25, load-balancing coefficient 0.01."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets are {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update(overrides)
        if name == "llama-style" and "n_kv_head" not in overrides:
            n_head = values.get("n_head", cls.n_head)
            values["n_kv_head"] = n_head // 2 if n_head % 2 == 0 else n_head
        return cls(**values)


PRESETS = {
    "gpt2-style": dict(ffn_kind="gelu", norm="layernorm", norm_placement="pre", positions="learned", bias=True,
                       tie_embeddings=True),
    "llama-style": dict(ffn_kind="swiglu", norm="rmsnorm", norm_placement="pre", positions="rope", bias=False,
                        tie_embeddings=False),
    "moe": dict(ffn_kind="moe", n_experts=4, top_k=2, expert_kind="gelu", router="mixtral", capacity_factor=1.25,
                aux_loss_coef=0.01, norm="layernorm", norm_placement="pre", positions="learned", bias=True,
                tie_embeddings=True),
}
