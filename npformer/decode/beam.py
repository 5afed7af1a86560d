"""Decoding an EncoderDecoder: greedy decoding and beam search.

Both encode the source once, project the encoder output to each decoder layer's cross-attention keys and values
once (``project_context``), and reuse them at every step. With ``use_cache=True`` (the default) the decoder's
self-attention keeps a key/value cache per layer and each step feeds only the newest token; with
``use_cache=False`` it recomputes the whole prefix each step (the reference; both give the same tokens).

Outputs are (B, L) int64 arrays of generated tokens (bos not included): each row ends with eos if it finished,
then pad_id to the common length L <= max_len.

Beam search scores a hypothesis Y by GNMT's length normalisation (Wu et al. 2016, without the coverage term):

    score(Y) = log P(Y | X) / lp(Y),     lp(Y) = ((5 + |Y|) / 6) ** alpha

with |Y| the number of generated tokens including eos, and alpha = ``length_penalty`` (0: plain log
probability, which favours short outputs; 0.6 to 1.0 is usual). A finished hypothesis stays in the beam with its
score frozen (it can only be extended by pad at no cost), and the search stops when every beam has finished or
after max_len steps. Bookkeeping is in float64 so the ranking of close candidates is exact.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend


class DecoderCache:
    """One decoder layer's self-attention keys and values so far, each (B, Hkv, t, D).

    ``update(k, v)`` appends this step's keys and values and returns all of them (the interface
    ``MultiHeadAttention.forward(kv_cache=...)`` calls); ``reorder(index)`` keeps rows ``index`` (beam search).
    """

    def __init__(self):
        self.k = None
        self.v = None

    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            xp = backend.array_module(k)
            self.k = xp.concatenate([self.k, k], axis=2)
            self.v = xp.concatenate([self.v, v], axis=2)
        return self.k, self.v

    def reorder(self, index) -> None:
        if self.k is not None:
            self.k, self.v = self.k[index], self.v[index]


def _stable_argsort(a):
    """argsort along the last axis, ties kept in index order. CuPy's argsort is always stable and (in some
    versions) takes no ``kind``; NumPy's default is not stable."""
    xp = backend.array_module(a)
    return xp.argsort(a, axis=-1, kind="stable") if xp is np else xp.argsort(a, axis=-1)


def _check(model, src, max_len: int, bos: int, eos: int) -> None:
    cfg = model.config
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"decode: max_len must be a positive integer, got {max_len!r}")
    if cfg.positions == "learned" and max_len > cfg.max_len:
        raise ValueError(f"decode: max_len={max_len} exceeds the model's learned positions (max_len={cfg.max_len})")
    for name, tok in (("bos", bos), ("eos", eos)):
        if not 0 <= tok < cfg.tgt_vocab_size:
            raise ValueError(f"decode: {name}={tok} is not a target token id (tgt_vocab_size={cfg.tgt_vocab_size})")
    if getattr(src, "ndim", None) != 2:
        raise ValueError(f"decode: src must be a (B, S) integer array, got shape {getattr(src, 'shape', None)}")


class _Stepper:
    """Runs the decoder one step at a time over rows that share precomputed cross-attention keys and values."""

    def __init__(self, model, context_kv, context_mask, n_rows: int, use_cache: bool):
        self.model, self.context_kv, self.context_mask = model, context_kv, context_mask
        self.caches = [DecoderCache() for _ in model.dec_blocks] if use_cache else None
        self.n_rows = n_rows

    def next_logits(self, tokens):
        """tokens (N, t) all decoded so far (bos first) -> logits (N, V) for the next token."""
        t = tokens.shape[1]
        if self.caches is None:  # recompute the whole prefix
            logits = self.model.decode(tokens, context_kv=self.context_kv, context_mask=self.context_mask)
        else:  # feed only the newest token; earlier keys/values come from the caches
            logits = self.model.decode(tokens[:, t - 1:], context_kv=self.context_kv,
                                       context_mask=self.context_mask, pos_offset=t - 1, kv_caches=self.caches)
        return logits[:, -1]

    def reorder(self, index) -> None:
        if self.caches is not None:
            for cache in self.caches:
                cache.reorder(index)


def _encode_for_decoding(model, src, repeats: int = 1):
    """Encode once and project each decoder layer's cross-attention keys/values once; repeat rows for beams."""
    memory, cmask = model.encode(src)
    xp = backend.array_module(memory)
    context_kv = []
    for block in model.dec_blocks:
        k, v = block.cross.project_context(memory)  # each (B, Hkv, S, D)
        if repeats > 1:
            k, v = xp.repeat(k, repeats, axis=0), xp.repeat(v, repeats, axis=0)
        context_kv.append((k, v))
    if repeats > 1:
        cmask = xp.repeat(cmask, repeats, axis=0)
    return context_kv, cmask


def greedy_decode(model, src, max_len: int, bos: int, eos: int, use_cache: bool = True):
    """Pick the most probable next token at every step.

    model: an EncoderDecoder; src (B, S) integer ids. Returns (B, L) int64 (see the module docstring).
    Runs in eval mode (no dropout) and restores the model's mode afterwards.
    """
    _check(model, src, max_len, bos, eos)
    was_training = model.training
    model.eval()
    try:
        pad = model.config.pad_id
        context_kv, cmask = _encode_for_decoding(model, src)
        xp = backend.array_module(context_kv[0][0])
        B = src.shape[0]
        stepper = _Stepper(model, context_kv, cmask, B, use_cache)
        tokens = xp.full((B, 1), bos, dtype=np.int64)
        finished = xp.zeros((B,), dtype=bool)
        for _ in range(max_len):
            nxt = stepper.next_logits(tokens).argmax(axis=-1).astype(np.int64)  # (B,)
            nxt = xp.where(finished, pad, nxt)
            tokens = xp.concatenate([tokens, nxt[:, None]], axis=1)
            finished = finished | (nxt == eos)
            if bool(finished.all()):
                break
        return tokens[:, 1:]
    finally:
        model.train(was_training)


def length_penalty_factor(lengths, alpha: float):
    """GNMT's lp = ((5 + |Y|) / 6) ** alpha, for an array of lengths (float64)."""
    return ((5.0 + lengths) / 6.0) ** alpha


def beam_search(model, src, beam_width: int, max_len: int, bos: int, eos: int, length_penalty: float = 0.0,
                use_cache: bool = True, return_scores: bool = False):
    """Beam search with GNMT length normalisation (see the module docstring); one best hypothesis per source.

    model: an EncoderDecoder; src (B, S) integer ids; beam_width K >= 1; length_penalty alpha >= 0.
    Returns tokens (B, L) int64, and with return_scores=True also (B,) float64 normalised scores
    log P(Y | X) / lp(Y) of the returned hypotheses. With K = 1 it returns exactly greedy_decode's tokens.
    """
    _check(model, src, max_len, bos, eos)
    if not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_search: beam_width must be a positive integer, got {beam_width!r}")
    alpha = float(length_penalty)
    if not (alpha >= 0.0 and math.isfinite(alpha)):
        raise ValueError(f"beam_search: length_penalty must be a finite number >= 0, got {length_penalty!r}")
    was_training = model.training
    model.eval()
    try:
        pad = model.config.pad_id
        B, K, V = src.shape[0], beam_width, model.config.tgt_vocab_size
        context_kv, cmask = _encode_for_decoding(model, src, repeats=K)  # rows b*K .. b*K + K-1 serve source b
        xp = backend.array_module(context_kv[0][0])
        stepper = _Stepper(model, context_kv, cmask, B * K, use_cache)
        tokens = xp.full((B * K, 1), bos, dtype=np.int64)
        # raw log-probabilities; only beam 0 is live at the start, so the K copies of bos are not K hypotheses
        scores = xp.full((B, K), -math.inf, dtype=np.float64)
        scores[:, 0] = 0.0
        finished = xp.zeros((B, K), dtype=bool)
        lengths = xp.zeros((B, K), dtype=np.float64)
        batch_base = (xp.arange(B, dtype=np.int64) * K)[:, None]  # (B, 1): first flat row of each source
        for t in range(max_len):
            logits = stepper.next_logits(tokens).astype(np.float64)  # (B*K, V)
            m = logits.max(axis=-1, keepdims=True)
            logp = logits - (m + xp.log(xp.exp(logits - m).sum(axis=-1, keepdims=True)))  # log-softmax
            # a finished hypothesis can only be extended by pad, at no cost: its score stays frozen
            flat_done = finished.reshape(-1)
            logp = xp.where(flat_done[:, None], -math.inf, logp)
            logp[:, pad] = xp.where(flat_done, 0.0, logp[:, pad])
            cand = scores[:, :, None] + logp.reshape(B, K, V)  # (B, K, V) raw scores of every extension
            cand_len = xp.where(finished, lengths, float(t + 1))[:, :, None]  # (B, K, 1)
            ranked = cand / length_penalty_factor(cand_len, alpha) if alpha > 0.0 else cand
            # the K best of K*V candidates per source; a stable sort breaks ties by the lowest index, as argmax
            order = _stable_argsort(-ranked.reshape(B, K * V))[:, :K]  # (B, K)
            origin, tok = order // V, order % V  # which beam each winner extends, and with which token
            scores = xp.take_along_axis(cand.reshape(B, K * V), order, axis=1)
            prev_done = xp.take_along_axis(finished, origin, axis=1)
            lengths = xp.where(prev_done, xp.take_along_axis(lengths, origin, axis=1), float(t + 1))
            finished = prev_done | (tok == eos)
            flat_origin = (batch_base + origin).reshape(-1)
            tokens = xp.concatenate([tokens[flat_origin], tok.reshape(-1, 1)], axis=1)
            stepper.reorder(flat_origin)
            if bool(finished.all()):
                break
        final = scores / length_penalty_factor(xp.maximum(lengths, 1.0), alpha) if alpha > 0.0 else scores
        best = final.argmax(axis=1)  # (B,)
        rows = xp.arange(B, dtype=np.int64) * K + best
        out = tokens[rows, 1:]
        if return_scores:
            return out, final[xp.arange(B), best]
        return out
    finally:
        model.train(was_training)
