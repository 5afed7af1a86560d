"""Memory-efficient attention in the manner of FlashAttention (Dao et al. 2022, FlashAttention-2 loop order).

Same function, shapes, options and errors as ``attention.attention_forward`` / ``attention_backward`` (the
reference, which a test compares this with), but the (Tq, Tk) score matrix is never formed: queries are cut into
blocks of block_q rows and keys into blocks of block_k, and a softmax is computed online, block by block,
keeping per query row a running max m and running sum l and rescaling the output accumulator when m grows.
The cache holds q, k, v, out and the per-row log-sum-exp L (B, H, Tq); backward recomputes each block's
probabilities P = exp(S - L) from them. Working memory is O(B*H*block_q*block_k + B*H*T*D): linear in T.

Shapes: B batch, H query heads, Hkv kv heads, G = H // Hkv, Tq queries, Tk keys, D head size.

Sliding window (``window`` W, causal): query block q0:q1 sees at most keys q0 + (Tk - Tq) - W + 1 .. q1 - 1 +
(Tk - Tq), so only the key blocks that overlap that range are visited (``window_keys``, and ``window_queries`` in
the backward): a block that lies entirely outside the window is never computed, and the work grows as Tq * W
instead of Tq * Tk. Blocks are kept on the block_k (block_q) grid, so without a window the loops are unchanged.

Layout trick for grouped-query attention: q is rearranged once to (B, Hkv, Tq, G, D), so a block of queries
q[:, :, i0:i1] reshapes (as a view) to (B, Hkv, bq*G, D) and meets its kv head's keys in one matmul.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .. import backend
from .attention_inputs import AttentionSpec, causal_allowed, check_attention_inputs, window_keys, window_queries


class FlashAttentionCache(NamedTuple):
    q: Any  # (B, H, Tq, D)
    k: Any  # (B, Hkv, Tk, D)
    v: Any  # (B, Hkv, Tk, D)
    out: Any  # (B, H, Tq, D)
    lse: Any  # (B, H, Tq) log-sum-exp of each row's scores; +inf for a row with nothing to attend to
    spec: AttentionSpec  # sizes, scale, the mask (a reference, never copied) and the causal flag
    block_q: int
    block_k: int


def _grouped(x, spec: AttentionSpec):
    """(B, H, Tq, ...) -> contiguous (B, Hkv, Tq, G, ...): query blocks become views of shape (B, Hkv, bq*G, ...)."""
    B, H, Hkv, G, Tq = spec[:5]
    xp = backend.array_module(x)
    x5 = x.reshape((B, Hkv, G, Tq) + tuple(x.shape[3:]))
    return xp.ascontiguousarray(x5.swapaxes(2, 3))


def _ungrouped(x5, spec: AttentionSpec):
    """Inverse of _grouped: (B, Hkv, Tq, G, ...) -> contiguous (B, H, Tq, ...)."""
    B, H, Hkv, G, Tq = spec[:5]
    xp = backend.array_module(x5)
    return xp.ascontiguousarray(x5.swapaxes(2, 3)).reshape((B, H, Tq) + tuple(x5.shape[4:]))


def _grouped_mask(spec: AttentionSpec):
    """The 4-D mask (broadcastable to (B, H, Tq, Tk)) as a 5-D view broadcastable to (B, Hkv, Tq, G, Tk)."""
    m = spec.mask
    if m is None:
        return None
    mb, mh, mq, mk = m.shape
    if mh == 1:
        return m.reshape(mb, 1, mq, 1, mk)
    return m.reshape(mb, spec.Hkv, spec.G, mq, mk).swapaxes(2, 3)


def _block_hidden(xp, spec: AttentionSpec, mask5, q0, q1, k0, k1):
    """Boolean broadcastable to (B, Hkv, q1-q0, G, k1-k0), True where a score is hidden; None when none is.

    Returns the string "all" when the causal rule (or the window) hides the whole block (it is then skipped).
    """
    hidden = None
    if spec.causal:
        shift, W = spec.Tk - spec.Tq, spec.window
        if k0 > q1 - 1 + shift:  # even the last query of the block sees no key of it
            return "all"
        if W is not None and k1 - 1 <= q0 + shift - W:  # even the first query's window starts after the block
            return "all"
        # partial: some key is past some query's horizon, or (window) before some query's window starts
        if k1 - 1 > q0 + shift or (W is not None and k0 <= q1 - 1 + shift - W):
            hidden = ~causal_allowed(xp, spec.Tq, spec.Tk, q0, q1, k0, k1, spec.window)[:, None, :]  # (bq, 1, bk)
    if mask5 is not None:
        mq = slice(q0, q1) if mask5.shape[2] > 1 else slice(None)
        mk = slice(k0, k1) if mask5.shape[4] > 1 else slice(None)
        not_allowed = ~mask5[:, :, mq, :, mk]
        hidden = not_allowed if hidden is None else (not_allowed | hidden)
    return hidden


def _check_blocks(block_q, block_k):
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ValueError(f"flash_attention: {name} must be a positive integer, got {b!r}")


def flash_attention_forward(q, k, v, mask=None, causal=False, scale=None, block_q=128, block_k=128, window=None):
    """Tiled attention with an online softmax; same contract as ``attention_forward``.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D), H % Hkv == 0. mask: None or boolean broadcastable to
    (B, H, Tq, Tk), True where a query may attend. causal: key j visible to query i iff j <= i + (Tk - Tq).
    window: None or W (causal only): also j > i + (Tk - Tq) - W; key blocks outside every window are skipped.
    scale: default 1 / sqrt(D). block_q, block_k: tile sizes (need not divide Tq, Tk).
    Returns out (B, H, Tq, D) and a FlashAttentionCache (no (Tq, Tk) array in it).
    """
    xp = backend.array_module(q, k, v)
    spec = check_attention_inputs("flash_attention", q, k, v, mask, causal, scale, window)
    _check_blocks(block_q, block_k)
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    dtype = q.dtype
    qg = _grouped(q * spec.scale, spec)  # (B, Hkv, Tq, G, D), scaled once
    mask5 = _grouped_mask(spec)
    kt = k.swapaxes(-1, -2)  # (B, Hkv, D, Tk), a view
    out_g = xp.empty((B, Hkv, Tq, G, D), dtype=dtype)
    lse_g = xp.empty((B, Hkv, Tq, G), dtype=dtype)

    for q0 in range(0, Tq, block_q):
        q1 = min(q0 + block_q, Tq)
        n = (q1 - q0) * G
        q_blk = qg[:, :, q0:q1].reshape(B, Hkv, n, D)
        m = xp.full((B, Hkv, n, 1), -math.inf, dtype=dtype)  # running max of the scores seen so far
        l = xp.zeros((B, Hkv, n, 1), dtype=dtype)  # running sum of exp(score - m)
        acc = xp.zeros((B, Hkv, n, D), dtype=dtype)  # running sum of exp(score - m) * v
        first, end = window_keys(spec, q0, q1)  # the keys these queries can see at most: first:end
        for k0 in range(first - first % block_k, end, block_k):  # only those key blocks, on the block_k grid
            k1 = min(k0 + block_k, Tk)
            hidden = _block_hidden(xp, spec, mask5, q0, q1, k0, k1)
            if isinstance(hidden, str):  # (not reached: the range holds only blocks some query sees)
                continue
            s = xp.matmul(q_blk, kt[:, :, :, k0:k1])  # S = (scale Q) K^T: (B, Hkv, bq*G, bk)
            if hidden is not None:
                xp.copyto(s.reshape(B, Hkv, q1 - q0, G, k1 - k0), -math.inf, where=hidden)
            # online softmax: new max, rescale what was accumulated under the old max by exp(m_old - m_new)
            m_new = xp.maximum(m, s.max(axis=-1, keepdims=True))
            m_safe = m_new.copy()  # rows still without any visible key keep max -inf: shift them by 0 instead
            xp.copyto(m_safe, 0.0, where=(m_new == -math.inf))
            s -= m_safe
            p = xp.exp(s, out=s)  # hidden scores become exactly 0
            alpha = m - m_safe
            xp.exp(alpha, out=alpha)  # exp(-inf) = 0 for the first visible block, so the empty state drops out
            l *= alpha
            l += p.sum(axis=-1, keepdims=True)
            acc *= alpha
            acc += xp.matmul(p, v[:, :, k0:k1])
            m = m_new
        # O = acc / l; L = m + log(l). Rows that saw no key (l = 0): O = 0 and L = +inf, so exp(S - L) = 0.
        empty = l == 0.0
        xp.copyto(l, 1.0, where=empty)
        acc /= l
        lse = xp.log(l)
        xp.copyto(m, 0.0, where=empty)
        lse += m
        xp.copyto(lse, math.inf, where=empty)
        out_g[:, :, q0:q1] = acc.reshape(B, Hkv, q1 - q0, G, D)
        lse_g[:, :, q0:q1] = lse.reshape(B, Hkv, q1 - q0, G)

    out = _ungrouped(out_g, spec)
    lse = _ungrouped(lse_g, spec)
    return out, FlashAttentionCache(q, k, v, out, lse, spec, block_q, block_k)


def flash_attention_backward(dout, cache: FlashAttentionCache):
    """Gradients of tiled attention: dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk, dv (B, Hkv, Tk, D).

    Derivation: the same chain rule as ``attention_backward`` (O = P V, P = softmax(S), S = scale Q K^T), applied
    one (query block, key block) tile at a time, which is possible because every term of it is local to a tile
    once two row quantities are known:
        P_ij = exp(S_ij - L_i), with L_i the row's log-sum-exp saved by the forward (no max or sum to redo);
        rowsum(dP * P)_i = sum_j dO_i . V_j P_ij = dO_i . O_i =: Delta_i, from the saved output.
    Then per tile: dV_j += P_ij^T dO_i;  dP_ij = dO_i V_j^T;  dS_ij = P_ij (dP_ij - Delta_i);
    dQ_i += scale dS_ij K_j;  dK_j += scale dS_ij^T Q_i. Never forms (Tq, Tk).
    """
    # forward was: S = scale Q K^T;  P = exp(S - L) (0 where hidden);  O = P V
    xp = backend.array_module(dout)
    q, k, v, out, lse, spec, block_q, block_k = cache
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    dtype = q.dtype
    qg = _grouped(q * spec.scale, spec)  # (B, Hkv, Tq, G, D)
    dog = _grouped(dout, spec)  # (B, Hkv, Tq, G, D)
    lse_g = _grouped(lse, spec)  # (B, Hkv, Tq, G)
    # softmax backward needs rowsum(dP * P)_i = dO_i . O_i  (=: Delta_i), (B, Hkv, Tq, G)
    delta_g = _grouped((dout * out).sum(axis=-1), spec)
    mask5 = _grouped_mask(spec)
    dq_g = xp.zeros((B, Hkv, Tq, G, D), dtype=dtype)
    dk = xp.zeros((B, Hkv, Tk, D), dtype=dtype)
    dv = xp.zeros((B, Hkv, Tk, D), dtype=dtype)

    for k0 in range(0, Tk, block_k):  # outer loop over key blocks: dK, dV of this block accumulate locally
        k1 = min(k0 + block_k, Tk)
        k_blk, v_blk = k[:, :, k0:k1], v[:, :, k0:k1]  # (B, Hkv, bk, D)
        dk_blk, dv_blk = dk[:, :, k0:k1], dv[:, :, k0:k1]  # views: += writes into dk, dv
        first, end = window_queries(spec, k0, k1)  # the queries that can see a key of this block: first:end
        for q0 in range(first - first % block_q, end, block_q):
            q1 = min(q0 + block_q, Tq)
            hidden = _block_hidden(xp, spec, mask5, q0, q1, k0, k1)
            if isinstance(hidden, str):  # (not reached: the range holds only blocks that see a key of it)
                continue
            n = (q1 - q0) * G
            q_blk = qg[:, :, q0:q1].reshape(B, Hkv, n, D)
            do_blk = dog[:, :, q0:q1].reshape(B, Hkv, n, D)
            # recompute P = exp(S - L) for this block
            s = xp.matmul(q_blk, k_blk.swapaxes(-1, -2))  # (B, Hkv, n, bk)
            if hidden is not None:
                xp.copyto(s.reshape(B, Hkv, q1 - q0, G, k1 - k0), -math.inf, where=hidden)
            s -= lse_g[:, :, q0:q1].reshape(B, Hkv, n, 1)
            p = xp.exp(s, out=s)
            # O = P V  =>  dV = P^T dO (summed over the block's rows and the G heads of the group)
            dv_blk += xp.matmul(p.swapaxes(-1, -2), do_blk)
            #           =>  dP = dO V^T
            dp = xp.matmul(do_blk, v_blk.swapaxes(-1, -2))
            # P = softmax(S)  =>  dS = P * (dP - Delta)
            dp -= delta_g[:, :, q0:q1].reshape(B, Hkv, n, 1)
            dp *= p
            # S = (scale Q) K^T  =>  dQ = scale dS K  (scale applied at the end),  dK = dS^T (scale Q)
            dq_g[:, :, q0:q1] += xp.matmul(dp, k_blk).reshape(B, Hkv, q1 - q0, G, D)
            dk_blk += xp.matmul(dp.swapaxes(-1, -2), q_blk)
    dq_g *= spec.scale
    return _ungrouped(dq_g, spec), dk, dv
