"""Text generation from a GPT: greedy, temperature, top-k and nucleus (top-p) sampling, with a key/value cache.

    out = generate(model, tokenizer.encode("To be"), max_new_tokens=100, temperature=0.8, top_k=40, seed=0)
    print(tokenizer.decode(out[0]))

Shapes: B batch (prompts), T time, V vocabulary, W the context window (see ``generate``).

The model runs on the active backend; sampling runs on the host. Each step moves one (B, V) row of logits to the
host with ``backend.to_numpy`` and the (B, 1) chosen ids back with ``backend.asarray``: the two named boundaries.
Sampling draws from a host NumPy generator, so a seed gives the same tokens on every backend (up to the model's
own rounding differences).

With the cache (the default), the prompt is encoded once (prefill), and each new token then runs the model on
one position, attending over the keys and values cached for the earlier ones: O(T) work per token instead of
the O(T^2) of re-encoding the whole prefix. A sliding-window model (``config.window`` = W_att, Mistral-style)
sees only its last W_att positions, so its caches keep only those (``RollingKVCache``): W_att positions per layer
instead of the whole context W, and each token attends over at most W_att keys; the tokens are the same as
without the cache. Once the sequence outgrows the context W, every model (windowed or not) re-encodes its last W
tokens from position 0 at each step, without a cache, as it was trained to see them.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from .kv_cache import make_kv_caches


# ---------------------------------------------------------------------------------------------------------------
# sampling (host NumPy, after the to_numpy boundary)
# ---------------------------------------------------------------------------------------------------------------
def _check_sampling(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"generate: temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                              or not 0.0 < top_p <= 1.0):
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p!r}")


def filter_logits(logits, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Keep the top-k tokens, then the nucleus of what is left; everything else becomes -inf.

    logits: (B, V) host array (already divided by the temperature). Returns a float64 (B, V) copy.
    top_k:  keep exactly the k largest logits of each row (ties broken towards the lower id); k > V keeps all.
    top_p:  of the tokens still kept, sorted by probability (renormalised over them), keep the smallest prefix
            whose total probability reaches top_p: a token is kept iff the mass strictly before it is < top_p.
            The most probable token is always kept.
    """
    logits = np.array(logits, dtype=np.float64)  # a float64 copy: filtered in place below
    if logits.ndim != 2:
        raise ValueError(f"filter_logits: logits must be (B, V), got shape {logits.shape}")
    B, V = logits.shape
    rows = np.arange(B)[:, None]
    if top_k is not None and top_k < V:
        order = np.argsort(-logits, axis=1, kind="stable")  # (B, V) ids, best first
        logits[rows, order[:, top_k:]] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, axis=1, kind="stable")
        sorted_logits = logits[rows, order]
        probs = np.exp(sorted_logits - sorted_logits[:, :1])  # stable softmax, best first; -inf -> 0
        probs /= probs.sum(axis=1, keepdims=True)
        mass_before = np.cumsum(probs, axis=1) - probs  # (B, V) probability of the better tokens
        drop = mass_before >= top_p
        drop[:, 0] = False
        logits[rows, order] = np.where(drop, -np.inf, sorted_logits)
    return logits


def sample_next(logits, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> np.ndarray:
    """One token per row from (B, V) host logits -> (B,) int64 ids.

    temperature 0: argmax (greedy; top_k and top_p do not matter). Otherwise softmax(filter_logits(logits / T))
    sampled by inverting its cumulative distribution with one uniform draw per row from ``rng``.
    """
    _check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"sample_next: logits must be (B, V), got shape {logits.shape}")
    if temperature == 0:
        return np.argmax(logits, axis=1).astype(np.int64)
    z = filter_logits(logits / float(temperature), top_k, top_p)
    probs = np.exp(z - z.max(axis=1, keepdims=True))  # filtered tokens: exp(-inf) = 0, never drawn
    cdf = np.cumsum(probs, axis=1)  # (B, V)
    u = rng.random(z.shape[0]) * cdf[:, -1]  # (B,) uniform in [0, total)
    # token i is drawn when cdf[i-1] <= u < cdf[i]: the number of cdf entries <= u; a zero-probability token has
    # cdf[i] == cdf[i-1] and is skipped. If rounding made u reach the total, take the last possible token.
    ids = (cdf <= u[:, None]).sum(axis=1)
    last = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    return np.minimum(ids, last).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# checking the inputs (on the host, before anything moves to the device)
# ---------------------------------------------------------------------------------------------------------------
def _host_prompts(prompt_ids, vocab_size: int) -> tuple[np.ndarray, bool]:
    """prompt_ids -> ((B, T) int64 host array, was it a batch?)."""
    if hasattr(prompt_ids, "dtype") and hasattr(prompt_ids, "shape"):
        arr = backend.to_numpy(prompt_ids)
    else:
        try:
            arr = np.asarray(prompt_ids)
        except ValueError as exc:  # NumPy refuses ragged nested lists
            raise ValueError(f"generate: prompts in a batch must all have the same length ({exc})") from exc
        if arr.dtype == object:
            raise ValueError("generate: prompts in a batch must all have the same length")
    if arr.ndim not in (1, 2):
        raise ValueError(f"generate: prompt_ids must be 1-D (one prompt) or 2-D (B, T), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"generate: empty prompt (shape {arr.shape}); give at least one token per prompt "
                         "(e.g. a newline or a start-of-text id)")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"generate: prompt_ids must be integer token ids, got dtype {arr.dtype}")
    batched = arr.ndim == 2
    arr = arr.reshape(-1, arr.shape[-1]).astype(np.int64)
    bad = np.argwhere((arr < 0) | (arr >= vocab_size))
    if bad.size:
        b, t = (int(i) for i in bad[0])
        where = f"prompt {b} position {t}" if batched else f"position {t}"
        raise ValueError(f"generate: token id {int(arr[b, t])} at {where} is outside the vocabulary "
                         f"[0, {vocab_size})")
    return arr, batched


def _stop_set(stop, vocab_size: int) -> frozenset:
    if stop is None:
        return frozenset()
    ids = [stop] if isinstance(stop, numbers.Integral) else list(stop)
    for s in ids:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ValueError(f"generate: stop must be an int or a collection of ints, got {stop!r}")
        if not 0 <= s < vocab_size:
            raise ValueError(f"generate: stop id {s} is outside the vocabulary [0, {vocab_size})")
    return frozenset(int(s) for s in ids)


def context_window(config, max_positions: int | None = None) -> int:
    """The most positions the model is run on at once (W): block_size, or ``max_positions`` for RoPE and
    sinusoidal positions; ValueError for a learned table asked to go past its block_size rows."""
    if max_positions is None:
        return config.block_size
    if isinstance(max_positions, bool) or not isinstance(max_positions, numbers.Integral) or max_positions < 1:
        raise ValueError(f"generate: max_positions must be a positive integer or None, got {max_positions!r}")
    if config.positions == "learned" and max_positions > config.block_size:
        raise ValueError(f"generate: max_positions={max_positions} exceeds block_size={config.block_size}, the "
                         "number of learned position embeddings; only RoPE and sinusoidal positions can go further")
    return int(max_positions)


# ---------------------------------------------------------------------------------------------------------------
# the model side
# ---------------------------------------------------------------------------------------------------------------
def next_token_logits(model, idx, pos_offset: int = 0, kv_caches=None):
    """idx (B, T) on the active backend -> logits (B, V) of the last position only (the LM head runs on one
    position, not T). With kv_caches, idx holds only the new tokens, at positions pos_offset .. pos_offset+T-1."""
    x = model.hidden_states(idx, pos_offset=pos_offset, kv_caches=kv_caches)  # (B, T, C)
    return x[:, -1, :] @ model.head_weight()  # (B, C) @ (C, V)


def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed=None, stop=None, use_cache: bool = True,
             max_positions: int | None = None) -> list[np.ndarray]:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    prompt_ids: one prompt, a 1-D sequence of ints (list, NumPy or CuPy array); or a batch, a (B, T) array or a
        list of B equal-length lists. Ids are checked against the vocabulary on the host (ValueError naming the
        id); an empty prompt is a ValueError.
    temperature: 0 -> greedy (argmax at every step); otherwise logits / temperature are sampled.
    top_k, top_p: keep the k most likely tokens, then the nucleus of probability top_p among them (combinable;
        see ``filter_logits``).
    seed: an int (same call, same output), None (fresh entropy) or a ``numpy.random.Generator``.
    stop: an id or a collection of ids. A sequence ends right after it emits one; the stop token is KEPT as the
        last token of its output. The batch ends when every sequence has stopped or after max_new_tokens.
    use_cache: decode with a key/value cache (one position of compute per new token); False re-encodes the
        whole window for every token (the reference; slower).
    max_positions: the context window W. Default: the trained ``block_size``. RoPE and sinusoidal positions may
        be given a larger W (positions up to W - 1, beyond those seen in training: the caller opts in to the
        extrapolation); learned positions cannot (ValueError), they have block_size rows.

    The model sees at most the last W tokens: a longer prompt is cropped to its last W tokens (the returned
    output still starts with the whole prompt). When prompt + generated tokens outgrow W, each further token
    re-encodes the last W tokens from position 0, without the cache (nanoGPT's sliding window): correct, but
    every such token costs a full forward over W positions.

    The model is put in eval mode (no dropout) for the call; each module's previous mode is restored after.
    Returns a list of B NumPy int64 1-D arrays: each prompt followed by its generated tokens (lengths differ when
    sequences stop at different steps).
    """
    cfg = model.config
    prompts, _ = _host_prompts(prompt_ids, cfg.vocab_size)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    _check_sampling(temperature, top_k, top_p)
    stops = _stop_set(stop, cfg.vocab_size)
    W = context_window(cfg, max_positions)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    B, T0 = prompts.shape
    tokens = np.empty((B, T0 + max_new_tokens), dtype=np.int64)  # host: prompt, then generated ids
    tokens[:, :T0] = prompts
    lengths = np.full(B, T0 + max_new_tokens, dtype=np.int64)  # where each output ends (set at its stop token)
    done = np.zeros(B, dtype=bool)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        n = T0  # tokens so far
        if max_new_tokens > 0:
            # prefill: encode the (cropped) prompt once, filling the caches
            # the cache never holds more than the window, nor more than the whole output (a model with a long
            # context, like Llama's, then allocates what this call needs, not max_position_embeddings)
            caches = make_kv_caches(model, B, min(W, T0 + max_new_tokens)) if use_cache else None
            logits = next_token_logits(model, tokens[:, max(0, n - W):n], 0, caches)  # host ids: moved there
        for step in range(max_new_tokens):
            # every row draws, finished or not (its tokens are cut off below), so rows never shift each other's
            # random draws: a run with stop ids is the run without them, cut at each row's first stop
            new = sample_next(backend.to_numpy(logits), rng, temperature, top_k, top_p)  # (B,) host: the one sync
            tokens[:, n] = new
            n += 1
            if stops:
                hit = ~done & np.isin(new, list(stops))
                lengths[hit] = n
                done |= hit
            if done.all() or step == max_new_tokens - 1:
                break
            # (n <= W implies the prompt was not cropped, so cache slot n - 1 is position n - 1)
            if caches is not None and n <= W:
                # one new position: q, k, v for it alone; attention reads the cached keys of the earlier ones
                logits = next_token_logits(model, tokens[:, n - 1:n], n - 1, caches)
            else:
                # no cache, or the window is full: re-encode the last W tokens from position 0
                logits = next_token_logits(model, tokens[:, max(0, n - W):n], 0, None)
    finally:
        for m, mode in modes:
            m.training = mode
    return [tokens[b, :min(int(lengths[b]), n)].copy() for b in range(B)]
