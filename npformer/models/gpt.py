"""GPT: a decoder-only language model built from npformer's layers, with its backward written out.

Shapes: idx (B, T) integer token ids, T <= block_size; logits (B, T, V); C = n_embd.

forward:   x = wte[idx] (+ wpe[pos] | + sinusoid[pos]);  x = drop(x);  x = block_l(x) for l = 1..L;
           x = norm_f(x) (pre-LN only);  logits = x @ W_head   (W_head = wte^T when tied)
loss:      mean cross-entropy of logits[:, t] against targets[:, t] (the next tokens); in training, plus each
           mixture-of-experts layer's auxiliary losses (ffn_kind "moe": see GPTConfig and npformer.nn.moe)
backward:  the same list, read from the bottom up.

Data-parallel runners (npformer.parallel) cut a batch into chunks, one forward each: a MoE model's auxiliary
losses (and its capacity limits) are then per chunk, as they are per device in real systems.
"""

from __future__ import annotations

import math

from .. import backend
from ..functional.linear import check_id_range
from ..kernels import ops
from ..nn import Dropout, Embedding, Module, MoEFeedForward, Parameter, SinusoidalTable, TransformerBlock, make_norm
from ..nn import init as nn_init
from .config import GPTConfig
from .tiers import runs_in_config_tier


class GPT(Module):
    caches = ("_cache_loss", "_cache_head")  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, config: GPTConfig):
        config.validate()
        self.config = config
        cfg = config
        rng = nn_init.as_rng(cfg.seed)
        C = cfg.n_embd
        self.wte = Embedding(cfg.vocab_size, C, rng=rng)
        self.wpe = Embedding(cfg.block_size, C, rng=rng) if cfg.positions == "learned" else None
        self.drop = Dropout(cfg.dropout, seed=cfg.seed * 7919 + 1)
        proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)  # GPT-2: residual projections scaled by 1/sqrt(2 L)
        self.blocks = [
            TransformerBlock(C, cfg.n_head, cfg.n_kv_head, ffn_hidden=cfg.ffn_hidden, ffn_kind=cfg.ffn_kind,
                             norm=cfg.norm, placement=cfg.norm_placement, bias=cfg.bias, dropout=cfg.dropout,
                             causal=True, rope=cfg.positions == "rope", rope_base=cfg.rope_base,
                             proj_std=proj_std, attn_impl=cfg.attn_impl, rng=rng, seed=cfg.seed * 7919 + 10 + i,
                             recompute=cfg.recompute, gelu_approximate=cfg.gelu_approximate,
                             norm_eps=cfg.norm_eps, window=cfg.window, moe=cfg.moe_options())
            for i in range(cfg.n_layer)
        ]
        # post-LN blocks end in a norm already; pre-LN stacks need one before the head
        self.norm_f = (make_norm(cfg.norm, C, bias=cfg.bias, eps=cfg.norm_eps) if cfg.norm_placement == "pre"
                       else None)
        self.lm_head = None if cfg.tie_embeddings else Parameter(nn_init.normal(rng, (C, cfg.vocab_size)))
        self.sinusoid = SinusoidalTable(C, min_len=cfg.block_size)
        self._cache_loss = None
        # all parameters (and gradients) as views of one buffer: AdamW and clipping then run a few passes over
        # the whole model instead of a loop over ~16 arrays per layer (values and p.data / p.grad unchanged)
        self.flatten_parameters()

    # -- Hugging Face model directories (npformer/models/pretrained.py) --------------------------------------------
    @classmethod
    def from_pretrained(cls, path, dtype="float32", **overrides) -> "GPT":
        """A GPT from a local Hugging Face directory (config.json + model.safetensors or its shards): model_type
        gpt2, llama, mistral or mixtral, read with NumPy alone. dtype "float32" or "float64"; overrides: block_size
        (crop the context), dropout (to fine-tune), kernels, attn_impl, recompute, loss_chunk, seed, and a mixture
        of experts' training options aux_loss_coef, z_loss_coef, capacity_factor."""
        from .pretrained import from_pretrained

        return from_pretrained(path, dtype=dtype, **overrides)

    def save_pretrained(self, path, dtype: str | None = None, max_shard_size: int | None = None) -> list[str]:
        """Write this GPT as a Hugging Face directory that transformers' from_pretrained reads (config.json,
        model.safetensors or shards of at most max_shard_size bytes). dtype: "float32", "bfloat16", "float16",
        "float64", or None (the source files' dtype; float32 for a model built here). Returns the files written."""
        from .pretrained import save_pretrained

        return save_pretrained(self, path, dtype=dtype, max_shard_size=max_shard_size)

    # -- helpers ---------------------------------------------------------------------------------------------
    def head_weight(self):
        """The output projection as (C, V): wte's transpose when tied (a view, no copy)."""
        return self.wte.weight.data.T if self.lm_head is None else self.lm_head.data

    def _take_ids(self, idx, pos_offset: int):
        """idx checked and on the model's backend. Host ids (a NumPy array) are range-checked here, which is free,
        and uploaded; ids already on the device are not range-checked (a device sync per call): CuPy wraps a bad
        id silently, so check such ids yourself or pass host ids."""
        if getattr(idx, "ndim", None) != 2:
            raise ValueError(f"GPT: idx must be a (B, T) integer array, got shape {getattr(idx, 'shape', None)}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"GPT: idx must hold integer token ids, got dtype {idx.dtype}")
        T = idx.shape[1]
        if self.config.positions == "learned" and pos_offset + T > self.config.block_size:
            raise ValueError(f"GPT: positions up to {pos_offset + T} exceed the context length block_size="
                             f"{self.config.block_size} of learned position embeddings")
        if backend.on_host(idx):
            check_id_range("GPT", idx, self.config.vocab_size)
        return backend.to_backend_of(idx, self.wte.weight.data)

    def _positions(self, T: int, pos_offset: int):
        return backend.array_module(self.wte.weight.data).arange(pos_offset, pos_offset + T, dtype="int64")

    # -- forward -----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def hidden_states(self, idx, pos_offset: int = 0, kv_caches=None):
        """idx (B, T) -> final hidden states (B, T, C), before the LM head. Caches what backward needs."""
        idx = self._take_ids(idx, pos_offset)
        T = idx.shape[1]
        positions = self._positions(T, pos_offset)
        x = self.wte.forward(idx)
        if self.wpe is not None:
            x = x + self.wpe.forward(positions)
        elif self.config.positions == "sinusoidal":
            x = x + self.sinusoid.rows(pos_offset, pos_offset + T, x.dtype)
        x = self.drop.forward(x)
        rope_positions = positions if self.config.positions == "rope" else None
        for i, block in enumerate(self.blocks):
            x = block.forward(x, positions=rope_positions, kv_cache=None if kv_caches is None else kv_caches[i])
        if self.norm_f is not None:
            x = self.norm_f.forward(x)
        return x

    @runs_in_config_tier
    def forward(self, idx, pos_offset: int = 0, kv_caches=None):
        """idx: (B, T) -> logits (B, T, V).

        pos_offset / kv_caches: for decoding with a key/value cache (one cache per block); see npformer.decode.generate.
        """
        x = self.hidden_states(idx, pos_offset, kv_caches)
        logits, self._cache_head = ops.linear_forward(x, self.head_weight())
        return logits

    @runs_in_config_tier
    def loss(self, idx, targets, ignore_index: int = -100):
        """Causal LM loss: mean cross-entropy of the logits at each position against ``targets`` (B, T), the
        next token at each position (ignore_index excluded). Returns a 0-d array; call ``backward()`` next.
        idx and targets may be host (NumPy) arrays for a device model: they are checked and moved here."""
        if getattr(targets, "shape", None) != idx.shape:
            raise ValueError(f"GPT: targets shape {getattr(targets, 'shape', None)} != idx shape {idx.shape}")
        if self.config.loss_chunk > 0:
            x = self.hidden_states(idx)
            loss, cache = ops.lm_head_cross_entropy_forward(x, self.head_weight(), targets,
                                                          ignore_index=ignore_index, chunk=self.config.loss_chunk)
            kind = "fused"
        else:
            logits = self.forward(idx)
            loss, cache = ops.cross_entropy_forward(logits, targets, ignore_index=ignore_index)
            kind = "plain"
        # a mixture of experts trains on CE + its layers' auxiliary losses; evaluation reports the CE alone
        with_extra = bool(self.moe_layers) and self.training
        if with_extra:
            for layer in self.moe_layers:
                loss = loss + layer.extra_loss
        self._cache_loss = (kind, cache, with_extra)
        return loss

    # -- mixture of experts: what the last forward did -----------------------------------------------------------
    @property
    def moe_layers(self) -> list:
        """The blocks' mixture-of-experts feed-forward layers, first block first ([] for a dense model)."""
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoEFeedForward)]

    def expert_stats(self):
        """(L_moe, E + 2) NumPy array from the last forward, one row per MoE layer: each expert's share of the
        router's assignments (sums to 1), the load-balancing loss, the share of assignments dropped past capacity.
        None for a dense model or before any forward. One transfer for all layers."""
        if not self.moe_layers or any(layer.stats is None for layer in self.moe_layers):
            return None
        xp = backend.array_module(self.moe_layers[0].stats)
        return backend.to_numpy(xp.stack([layer.stats for layer in self.moe_layers]))

    def progress_note(self) -> str:
        """Expert utilisation of the last forward, for a progress line: "experts L0 24/26/25/25% L1 ... aux
        1.01/0.99 drop 2%" (each layer's experts' shares of the assignments in percent, each layer's load-balancing
        loss, the mean share dropped past capacity). "" for a dense model or before any forward. Under a
        data-parallel runner the model itself runs the first chunk: the note is that chunk's."""
        stats = self.expert_stats()
        if stats is None:
            return ""
        shares = " ".join(f"L{i} " + "/".join(f"{100 * f:.0f}" for f in row[:-2]) + "%"
                          for i, row in enumerate(stats))
        aux = "/".join(f"{a:.2f}" for a in stats[:, -2])
        note = f"experts {shares} aux {aux}"
        if self.config.capacity_factor:  # None or 0: no capacity, nothing is ever dropped
            note += f" drop {100 * float(stats[:, -1].mean()):.0f}%"
        return note

    # -- backward ----------------------------------------------------------------------------------------------
    @runs_in_config_tier
    def backward(self, dloss: float = 1.0) -> None:
        """Fill every parameter's .grad (adding to what is there) with d(dloss * loss)/d(param).

        The forward of ``hidden_states`` + ``loss``, upside down."""
        if self._cache_loss is None:
            raise RuntimeError("GPT.backward: call loss(idx, targets) first")
        kind, cache, with_extra = self._cache_loss
        self._cache_loss = None
        for layer in self.moe_layers:  # loss = CE + sum of their extra losses (in training): each gets dloss
            layer.extra_loss_grad = dloss if with_extra else 0.0
        # loss = CE(x @ W_head, targets)
        if kind == "fused":
            dx, dw_head = ops.lm_head_cross_entropy_backward(dloss, cache)
        else:
            dlogits = ops.cross_entropy_backward(dloss, cache)
            dx, dw_head, _ = ops.linear_backward(dlogits, self._cache_head)
            self._cache_head = None
        if self.lm_head is None:
            self.wte.weight.grad += dw_head.T  # tied: the head's gradient lands on the embedding table too
        else:
            self.lm_head.grad += dw_head
        # x = norm_f(x)
        if self.norm_f is not None:
            dx = self.norm_f.backward(dx)
        # x = block_l(x), l = L..1
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        # x = drop(wte[idx] + wpe[pos])
        dx = self.drop.backward(dx)
        if self.wpe is not None:
            self.wpe.backward(dx.sum(axis=0))  # one position row serves every sequence in the batch
        self.wte.backward(dx)
