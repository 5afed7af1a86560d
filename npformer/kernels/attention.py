"""The fast tier's attention: the reference maths (npformer.functional.attention) in causal row blocks.

Same signature and results as the reference; the cache differs (it keeps the scaled queries and the output), so a
forward and its backward run in the same tier.

Shapes: B batch, H query heads, Hkv key/value heads (H % Hkv == 0; G = H // Hkv query heads share one kv head),
Tq queries, Tk keys, D head size.

What is faster than the reference, with the maths unchanged:
- Grouped-query attention never copies k or v: q (B, H, Tq, D) is viewed as (B, Hkv, G*Tq, D)-like 5-D views, so
  each kv head meets all G of its query heads in one matmul, and the gradients of k and v come out summed over
  the group.
- Under the causal rule, blocks of query rows multiply only against the keys they can see (``row_blocks``),
  which skips about half of the products.
- The softmax and its backward run in place over blocks of rows (``blockwise``: cache-sized pieces, spread over
  threads on NumPy), and rowsum(dP * P) is computed as rowsum(dO * O), a (B, H, Tq) sum.
- With a sliding window W, each block of rows multiplies only against the keys its rows' windows cover
  (``window_blocks``: at most block rows + W - 1 keys), and P is stored as a band (B, H, Tq, L) holding just those
  keys: time and memory grow as Tq * W, not Tq * Tk.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import array_module
from ..functional.attention_inputs import AttentionSpec, causal_allowed, check_attention_inputs, window_keys
from .cpu import blockwise, num_threads

# Under the causal rule the queries are processed in blocks of rows, and each block multiplies only against the
# keys its last row can see. Measured on a 2-core Zen4 at (B, H, T, D) = (16, 6, 256, 64), forward + backward per
# layer: one BLAS thread 87.6 (one block) / 84.1 (128 rows) / 81.9 ms (64 rows); two threads 65.8 / 65.6 / 73.2 ms:
# OpenBLAS threads each small product, and its spinning threads slow the blockwise softmax that follows.
# On one thread (a data-parallel worker: npformer.parallel) smaller blocks win: at (8, 6, 256, 64) forward +
# backward took 33.7 ms with 128 rows, 30.9 with 64, 33.1 with 32.
BLOCK_ROWS = 128
BLOCK_ROWS_SINGLE_THREAD = 64


def row_blocks(spec: AttentionSpec, block_rows: int | None = None):
    """[(r0, r1, e)]: query rows r0:r1 of a block see (at most) keys 0:e; the keys e_prev:e are first seen there.

    Without the causal rule one block holds every row and every key. With it, rows r0:r1 see keys up to
    r1 - 1 + (Tk - Tq), so e = r1 + (Tk - Tq) clipped to 0..Tk, and key j is seen only by rows of its block and
    later ones: backward sums dK, dV of the keys e_prev:e over the rows r0:Tq alone.
    """
    Tq, Tk = spec.Tq, spec.Tk
    if block_rows is None:
        block_rows = BLOCK_ROWS_SINGLE_THREAD if num_threads() == 1 else BLOCK_ROWS
    if not spec.causal or Tq <= block_rows:
        return [(0, Tq, Tk)]
    return [(r0, min(Tq, r0 + block_rows), min(Tk, max(0, min(Tq, r0 + block_rows) + Tk - Tq)))
            for r0 in range(0, Tq, block_rows)]


def window_blocks(spec: AttentionSpec, block_rows: int | None = None):
    """[(r0, r1, k0, k1)] for a sliding window: query rows r0:r1 see (at most) keys k0:k1 (k1 <= k0: none).

    A window's band is block rows + W - 1 keys wide, of which each row uses W: blocks much taller than W waste
    most of their products, so the rows per block are capped at max(W, 32) (still whole BLAS-sized products)."""
    if block_rows is None:
        block_rows = BLOCK_ROWS_SINGLE_THREAD if num_threads() == 1 else BLOCK_ROWS
    block_rows = min(block_rows, max(spec.window, 32))
    return [(r0, min(spec.Tq, r0 + block_rows), *window_keys(spec, r0, min(spec.Tq, r0 + block_rows)))
            for r0 in range(0, spec.Tq, block_rows)]


def _grouped(a, Hkv, G):
    """(B, H, T, X) -> (B, Hkv, G, T, X), a view: query head h = hkv * G + g."""
    return a.reshape(a.shape[0], Hkv, G, a.shape[2], a.shape[3])


def _blocked_block(xp, spec: AttentionSpec, r0, r1, e, k0=0):
    """Boolean broadcastable to (B, Hkv, G, r1-r0, e-k0): True where a score of rows r0:r1, keys k0:e must be
    hidden; or None."""
    blocked = None
    if spec.mask is not None:
        m = spec.mask  # (B or 1, H or 1, Tq or 1, Tk or 1)
        m = m.reshape(m.shape[0], spec.Hkv, spec.G, *m.shape[2:]) if m.shape[1] != 1 else m[:, :, None]
        m = m[..., r0:r1, :] if m.shape[3] != 1 else m
        m = m[..., k0:e] if m.shape[4] != 1 else m
        blocked = ~m
    if spec.causal:
        hidden = ~causal_allowed(xp, spec.Tq, spec.Tk, r0, r1, k0, e, spec.window)
        blocked = hidden if blocked is None else (blocked | hidden)
    return blocked


def _softmax_kernel(xp, s, hidden_tail, blocked=None):
    """In place on one block of rows: s <- softmax(s) over the last axis, zero where ``blocked``; tail <- 0.

    s: (..., n, e) scores; hidden_tail: (..., n, Tk - e) the keys these rows never see; blocked: None or boolean
    of s's shape. Stable: exp(s - rowmax). A row with every key blocked gets zeros, not NaN.
    """
    if blocked is not None:
        xp.copyto(s, -math.inf, where=blocked)
    row_max = s.max(axis=-1, keepdims=True)
    if blocked is not None:  # a row with every key hidden has max -inf: use 0 so exp gives zeros, not NaN
        xp.copyto(row_max, 0.0, where=(row_max == -math.inf))
    s -= row_max
    xp.exp(s, out=s)
    row_sum = s.sum(axis=-1, keepdims=True)
    if blocked is not None:  # empty rows sum to 0: divide by 1 instead, they stay all-zero
        xp.copyto(row_sum, 1.0, where=(row_sum == 0.0))
    s /= row_sum
    hidden_tail[...] = 0.0


def _softmax_backward_kernel(dp, p, row_dot):
    """In place on one block of rows: dp <- p * (dp - row_dot)  (dS of a softmax; see attention_backward)."""
    dp -= row_dot
    dp *= p


def _matmul_sum_groups(xp, a, b, out):
    """out (B, Hkv, m, n) = sum over the G axis of a @ b, with a (B, Hkv, G, m, k) and b (B, Hkv, G, k, n)."""
    if a.shape[2] == 1:
        xp.matmul(a, b, out=out[:, :, None])
    else:
        xp.sum(xp.matmul(a, b), axis=2, out=out)


class RowBlockAttentionCache(NamedTuple):
    qs: Any  # (B, H, Tq, D) the scaled queries scale * q (dK = dS^T (scale Q) needs no further scaling)
    k: Any  # (B, Hkv, Tk, D)
    v: Any  # (B, Hkv, Tk, D)
    out: Any  # (B, H, Tq, D), for rowsum(dP * P) = rowsum(dO * O)
    p: Any  # (B, H, Tq, Tk) attention probabilities, zero where blocked; with a window the band (B, H, Tq, L)
    spec: AttentionSpec
    blocks: Any = None  # with a window: the forward's window_blocks; row r of block (r0, r1, k0, k1) holds
    #                     P[r, k0 + c] in band column c (the backward must use the same blocks)


def band_to_full(cache: RowBlockAttentionCache):
    """The probabilities (B, H, Tq, Tk) of a cache, whether stored whole or (sliding window) as a band: for tests
    and inspection (it allocates Tq * Tk)."""
    if cache.blocks is None:
        return cache.p
    xp = array_module(cache.p)
    B, H, Tq, Tk = cache.spec.B, cache.spec.H, cache.spec.Tq, cache.spec.Tk
    full = xp.zeros((B, H, Tq, Tk), dtype=cache.p.dtype)
    for r0, r1, k0, k1 in cache.blocks:
        if k1 > k0:
            full[:, :, r0:r1, k0:k1] = cache.p[:, :, r0:r1, :k1 - k0]
    return full


def attention_forward(q, k, v, mask=None, causal=False, scale=None, window=None):
    """The reference's ``attention_forward`` (same arguments, shapes, results and errors: see
    npformer.functional.attention), computed in causal row blocks (window: in bands, see ``window_blocks``).
    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) -> out (B, H, Tq, D), a RowBlockAttentionCache for this module's
    ``attention_backward``."""
    xp = array_module(q, k, v)
    spec = check_attention_inputs("attention", q, k, v, mask, causal, scale, window)
    if spec.window is not None:
        return _window_forward(xp, q, k, v, spec)
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    # contiguous copies (q scaled on the way): BLAS multiplies them faster than the strided views a layer passes
    qs = q * spec.scale
    k, v = xp.ascontiguousarray(k), xp.ascontiguousarray(v)
    # heads grouped as (B, Hkv, G, T, .): the G query heads of a kv group meet one k and v (broadcast, no copy)
    qs5, k5, v5 = _grouped(qs, Hkv, G), k[:, :, None], v[:, :, None]
    p5 = xp.empty((B, Hkv, G, Tq, Tk), dtype=q.dtype)
    out5 = xp.empty((B, Hkv, G, Tq, D), dtype=q.dtype)

    for r0, r1, e in row_blocks(spec):  # query rows r0:r1 see keys 0:e at most
        if e == 0:  # (causal with Tq > Tk) these rows see no key at all
            p5[..., r0:r1, :] = 0.0
            out5[..., r0:r1, :] = 0.0
            continue
        # S = (scale * Q) K^T
        s = p5[..., r0:r1, :e]
        xp.matmul(qs5[..., r0:r1, :], k5[..., :e, :].swapaxes(-1, -2), out=s)
        # P = softmax(S) over keys, with blocked scores hidden (-inf) first; P = 0 for the keys e: never seen
        blocked = _blocked_block(xp, spec, r0, r1, e)
        arrays = (s, p5[..., r0:r1, e:]) + (() if blocked is None else (xp.broadcast_to(blocked, s.shape),))
        blockwise(lambda *a: _softmax_kernel(xp, *a), *arrays)
        # O = P V
        xp.matmul(s, v5[..., :e, :], out=out5[..., r0:r1, :])

    out = out5.reshape(B, H, Tq, D)
    return out, RowBlockAttentionCache(qs, k, v, out, p5.reshape(B, H, Tq, Tk), spec)


def attention_backward(dout, cache: RowBlockAttentionCache):
    """Gradients of attention: dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk (B, Hkv, Tk, D), dv (B, Hkv, Tk, D).

    dk and dv are summed over the G query heads that share each kv head.
    """
    # forward was: S = scale * Q K^T;  P = softmax(S) (zero where blocked);  O = P V
    xp = array_module(dout)
    if cache.blocks is not None:
        return _window_backward(xp, dout, cache)
    qs, k, v, out, p, spec = cache[:6]
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    qs5, k5, v5 = _grouped(qs, Hkv, G), k[:, :, None], v[:, :, None]
    p5, do5 = _grouped(p, Hkv, G), _grouped(dout, Hkv, G)

    # P = softmax(S)  =>  dS = P * (dP - rowsum(dP * P)).
    # rowsum(dP * P)_i = sum_j P_ij dO_i . V_j = dO_i . O_i, a (B, H, Tq) sum instead of a (Tq, Tk) temporary.
    # Blocked entries have P = 0, so dS = 0 there; empty rows have O = 0 and P = 0, so their dS is 0.
    row_dot = _grouped(xp.einsum("bhtd,bhtd->bht", dout, out)[..., None], Hkv, G)  # no (B, H, Tq, D) temporary
    ds5 = xp.empty_like(p5)
    dq5 = xp.empty((B, Hkv, G, Tq, D), dtype=dout.dtype)
    blocks = row_blocks(spec)
    for r0, r1, e in blocks:  # rows r0:r1 saw keys 0:e at most (P = 0 beyond, so dS = 0 there)
        if e == 0:
            dq5[..., r0:r1, :] = 0.0
            continue
        # O = P V  =>  dP = dO V^T
        ds = ds5[..., r0:r1, :e]
        xp.matmul(do5[..., r0:r1, :], v5[..., :e, :].swapaxes(-1, -2), out=ds)
        #          =>  dS = P * (dP - rowsum(dO * O))
        blockwise(_softmax_backward_kernel, ds, p5[..., r0:r1, :e], row_dot[..., r0:r1, :])
        # S = scale * Q K^T  =>  dQ = scale * dS K
        xp.matmul(ds, k5[..., :e, :], out=dq5[..., r0:r1, :])
    dq5 *= spec.scale

    # keys e_prev:e are seen only by rows r0: onwards, so their gradients sum over those rows (and the G heads):
    # O = P V  =>  dV = P^T dO;   S = scale * Q K^T  =>  dK = scale * dS^T Q = dS^T (scale * Q)
    dk = xp.empty((B, Hkv, Tk, D), dtype=dout.dtype)
    dv = xp.empty((B, Hkv, Tk, D), dtype=dout.dtype)
    k0 = 0  # the last block ends at e = Tk, so these slices cover every key once
    for r0, _, e in blocks:
        if e > k0:
            _matmul_sum_groups(xp, ds5[..., r0:, k0:e].swapaxes(-1, -2), qs5[..., r0:, :], dk[:, :, k0:e])
            _matmul_sum_groups(xp, p5[..., r0:, k0:e].swapaxes(-1, -2), do5[..., r0:, :], dv[:, :, k0:e])
            k0 = e
    return dq5.reshape(B, H, Tq, D), dk, dv


# ---------------------------------------------------------------------------------------------------------------
# sliding window: rows r0:r1 meet only keys k0:k1, and P is kept as a band
# ---------------------------------------------------------------------------------------------------------------
def _window_forward(xp, q, k, v, spec: AttentionSpec):
    """attention_forward with spec.window set: the same maths over each block's keys k0:k1 alone."""
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    qs = q * spec.scale
    k, v = xp.ascontiguousarray(k), xp.ascontiguousarray(v)
    qs5, k5, v5 = _grouped(qs, Hkv, G), k[:, :, None], v[:, :, None]
    blocks = window_blocks(spec)
    L = max(1, max(k1 - k0 for _, _, k0, k1 in blocks))  # the band's width: the most keys one block sees
    p5 = xp.empty((B, Hkv, G, Tq, L), dtype=q.dtype)
    out5 = xp.empty((B, Hkv, G, Tq, D), dtype=q.dtype)
    for r0, r1, k0, k1 in blocks:
        if k1 <= k0:  # these rows see no key at all (causal with Tq > Tk)
            p5[..., r0:r1, :] = 0.0
            out5[..., r0:r1, :] = 0.0
            continue
        # S = (scale * Q) K^T over keys k0:k1, in band columns 0:k1-k0
        s = p5[..., r0:r1, :k1 - k0]
        xp.matmul(qs5[..., r0:r1, :], k5[..., k0:k1, :].swapaxes(-1, -2), out=s)
        # P = softmax(S), hidden scores (mask, causal rule, window) first set to -inf; unused band columns 0
        blocked = _blocked_block(xp, spec, r0, r1, k1, k0)
        arrays = (s, p5[..., r0:r1, k1 - k0:]) + (() if blocked is None else (xp.broadcast_to(blocked, s.shape),))
        blockwise(lambda *a: _softmax_kernel(xp, *a), *arrays)
        # O = P V
        xp.matmul(s, v5[..., k0:k1, :], out=out5[..., r0:r1, :])
    out = out5.reshape(B, H, Tq, D)
    return out, RowBlockAttentionCache(qs, k, v, out, p5.reshape(B, H, Tq, L), spec, blocks)


def _window_backward(xp, dout, cache: RowBlockAttentionCache):
    """attention_backward for a band cache: each block's dS, dQ rows, and its share of dK, dV over keys k0:k1."""
    # forward was, per block: S = scale * Q_r K_k0:k1^T;  P = softmax(S) (zero where hidden);  O_r = P V_k0:k1
    qs, k, v, out, p, spec, blocks = cache
    B, H, Hkv, G, Tq, Tk, D = spec[:7]
    qs5, k5, v5 = _grouped(qs, Hkv, G), k[:, :, None], v[:, :, None]
    p5, do5 = _grouped(p, Hkv, G), _grouped(dout, Hkv, G)
    # rowsum(dP * P) = rowsum(dO * O), as in attention_backward
    row_dot = _grouped(xp.einsum("bhtd,bhtd->bht", dout, out)[..., None], Hkv, G)
    dq5 = xp.empty((B, Hkv, G, Tq, D), dtype=dout.dtype)
    dk = xp.zeros((B, Hkv, Tk, D), dtype=dout.dtype)  # keys are shared by neighbouring blocks: accumulated
    dv = xp.zeros((B, Hkv, Tk, D), dtype=dout.dtype)
    part = xp.empty((B, Hkv, min(Tk, p.shape[-1]), D), dtype=dout.dtype)  # one block's share of dK or dV
    for r0, r1, k0, k1 in blocks:
        if k1 <= k0:
            dq5[..., r0:r1, :] = 0.0
            continue
        n = k1 - k0
        pb = p5[..., r0:r1, :n]
        # O = P V  =>  dP = dO V^T;   P = softmax(S)  =>  dS = P * (dP - rowsum(dO * O))
        ds = xp.matmul(do5[..., r0:r1, :], v5[..., k0:k1, :].swapaxes(-1, -2))
        blockwise(_softmax_backward_kernel, ds, pb, row_dot[..., r0:r1, :])
        # S = scale * Q K^T  =>  dQ = scale * dS K;   dK = dS^T (scale * Q);   and O = P V  =>  dV = P^T dO
        xp.matmul(ds, k5[..., k0:k1, :], out=dq5[..., r0:r1, :])
        _matmul_sum_groups(xp, ds.swapaxes(-1, -2), qs5[..., r0:r1, :], part[:, :, :n])
        dk[:, :, k0:k1] += part[:, :, :n]
        _matmul_sum_groups(xp, pb.swapaxes(-1, -2), do5[..., r0:r1, :], part[:, :, :n])
        dv[:, :, k0:k1] += part[:, :, :n]
    dq5 *= spec.scale
    return dq5.reshape(B, H, Tq, D), dk, dv
