"""The fast tier's LM head + cross-entropy: fused, in chunks, so the (N, V) logits are never held whole.

The reference (npformer.functional.loss.lm_head_cross_entropy_forward) is ``linear_forward`` then
``cross_entropy_forward``; this computes the same loss and gradients (tested) in a fraction of the memory.

Shapes: x (..., C) final hidden states, N = number of positions; w (C, V) the head; targets (...) integer;
V vocabulary. The plain path, ``linear_forward`` then ``cross_entropy_forward``, keeps the logits (N, V) and
builds dlogits (N, V) in backward: at GPT-2's V = 50257 and N = 8 x 1024 tokens that is 1.6 GB each in float32.

    forward:   for each chunk of rows:  logits = x_c @ w;  lse_c = log sum_v exp(logits);  nll_c = lse_c - logits[t]
               loss = sum_n weight[n] * nll[n]                   (weight = 1 / count where kept, 0 where ignored)
    backward:  dlogits[n, v] = weight[n] * dloss * (exp(logits[n, v] - lse[n]) - [v == t_n])
               dx = dlogits @ w^T,  dw = x^T @ dlogits

Only lse (N,) is saved. Because it is, the backward's dlogits of one block of vocabulary columns needs nothing
from the other columns, so backward walks the vocabulary in column blocks: it recomputes that block's logits
(N, Vb) for every row, writes its slice of dw directly (no (C, V) accumulator besides dw itself) and adds the
block's share into dx. Working memory is ``chunk x V`` elements in both passes, besides x, w, dx and dw.
The same maths and results as the plain path (tests compare them, and check the gradients numerically).
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend
from ..functional.loss import DEFAULT_CHUNK, check_lm_head_inputs, target_weights


class ChunkedLMHeadLossCache(NamedTuple):
    x2d: object  # (N, C) the hidden states (a view of x)
    w: object  # (C, V)
    lse: object  # (N,) log-sum-exp of each row of logits
    targets: object  # (N,) integer, ignored positions replaced by 0
    weight: object  # (N,) in x's dtype: 1 / count where kept, 0 where ignored
    x_shape: tuple  # (..., C)
    chunk: int


def lm_head_cross_entropy_forward(x, w, targets, ignore_index: int = -100, chunk: int = DEFAULT_CHUNK):
    """Mean cross-entropy of the logits x @ w against targets, over positions whose target is not ignore_index,
    computed ``chunk`` rows at a time. If every target is ignored the loss is 0 (and so are the gradients).

    x: (..., C) float; w: (C, V); targets: (...) integer, each in [0, V) or == ignore_index
    -> loss: 0-d array of x's dtype, cache.
    """
    check_lm_head_inputs(x, w, targets, chunk)
    xp = backend.array_module(x, w)
    dtype = x.dtype
    C, V = w.shape
    x2d = x.reshape(-1, C)  # (N, C)
    flat_targets = targets.reshape(-1)  # (N,)
    N = x2d.shape[0]
    safe_targets, weight = target_weights("lm_head_cross_entropy", flat_targets, V, ignore_index, dtype, like=x)

    lse = xp.empty((N,), dtype=dtype)
    total = xp.zeros((), dtype=dtype)
    for r0 in range(0, N, chunk):
        r1 = min(r0 + chunk, N)
        logits = x2d[r0:r1] @ w  # (n, V): this chunk's logits, the only ones alive
        target_logit = logits[xp.arange(r1 - r0), safe_targets[r0:r1]]  # (n,) (fancy indexing: a copy)
        # lse = m + log(sum_v exp(logits[v] - m)), m = max_v logits[v]; computed in place in logits
        m = logits.max(axis=-1)
        logits -= m[:, None]
        xp.exp(logits, out=logits)
        lse_c = m + xp.log(logits.sum(axis=-1))
        lse[r0:r1] = lse_c
        # -log p[target] = lse - logits[target], weighted by 1 / count (0 where ignored)
        total += ((lse_c - target_logit) * weight[r0:r1]).sum()
    loss = xp.asarray(total, dtype=dtype)
    return loss, ChunkedLMHeadLossCache(x2d, w, lse, safe_targets, weight, tuple(x.shape), chunk)


def lm_head_cross_entropy_backward(dloss, cache: ChunkedLMHeadLossCache):
    """dloss: scalar (float or 0-d array) -> dx: (..., C), dw: (C, V), in x's dtype.

    dw is returned as the transpose of a contiguous (V, C) array (so a tied embedding table adds it row-wise).
    """
    x2d, w, lse, targets, weight, x_shape, chunk = cache
    xp = backend.array_module(x2d, w)
    dtype = x2d.dtype
    N, C = x2d.shape
    V = w.shape[1]
    # chain rule with the upstream scalar, kept in x's dtype (a float64 0-d dloss must not upcast float32)
    row_scale = (weight * xp.asarray(dloss, dtype=dtype))[:, None]  # (N, 1)
    dx = xp.zeros((N, C), dtype=dtype)
    dw_t = xp.empty((V, C), dtype=dtype)  # dw^T: each vocabulary block is a run of contiguous rows
    if N == 0:
        dw_t[...] = 0
        return dx.reshape(x_shape), dw_t.T
    rows = xp.arange(N)
    cols = max(1, (chunk * V) // N)  # vocabulary columns per block: (N, cols) <= chunk x V elements
    partial = xp.empty((N, C), dtype=dtype)
    for v0 in range(0, V, cols):
        v1 = min(v0 + cols, V)
        wb = w[:, v0:v1]  # (C, Vb)
        # forward: logits = x @ w  -> this block's columns, recomputed: (N, Vb)
        dlogits = x2d @ wb
        # forward: loss = sum_n weight[n] (lse[n] - logits[n, t_n])
        # dloss/dlogits[n, v] = weight[n] (p[n, v] - [v == t_n]),  p = exp(logits - lse)
        dlogits -= lse[:, None]
        xp.exp(dlogits, out=dlogits)
        in_block = (targets >= v0) & (targets < v1)  # rows whose target column lies in this block
        local = xp.clip(targets - v0, 0, v1 - v0 - 1)
        dlogits[rows, local] -= in_block.astype(dtype)  # subtract 1 there, 0 (at a harmless column) elsewhere
        dlogits *= row_scale
        # forward: logits[:, v0:v1] = x @ w[:, v0:v1]  ->  dx += dlogits @ w_b^T;  dw[:, v0:v1] = x^T @ dlogits
        xp.matmul(dlogits, wb.T, out=partial)
        dx += partial
        xp.matmul(dlogits.T, x2d, out=dw_t[v0:v1])
    return dx.reshape(x_shape), dw_t.T
