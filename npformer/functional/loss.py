"""Cross-entropy loss over the vocabulary, with ignore_index and label smoothing (PyTorch's conventions), and the
LM head followed by the loss as one pair.

Shapes: logits (..., V), targets (...), usually (B, T, V) and (B, T); N = number of positions; V vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend
from .linear import LinearCache, linear_backward, linear_forward


class CrossEntropyCache(NamedTuple):
    logits: object  # (N, V): the input itself (a view, no copy): probabilities are recomputed from it
    lse: object  # (N, 1): log-sum-exp of each row
    targets: object  # (N,) integer, ignored positions replaced by 0 (a safe index)
    weight: object  # (N,) in logits' dtype: 1 / count where kept, 0 where ignored
    label_smoothing: float
    shape: tuple  # logits' original shape (..., V)


def target_weights(op: str, flat_targets, vocab: int, ignore_index: int, dtype, like=None):
    """Validate targets and turn them into (safe_targets, weight), both (N,), on the backend of ``like`` (the
    logits; default: the targets' own).

    safe_targets: the targets with ignored positions replaced by class 0 (a valid index; their weight is 0);
    weight: 1 / (number of kept positions) where kept, 0 where ignored, in ``dtype``: the mean over kept positions
    is then sum(weight * per_position). Shared by cross_entropy and the lm_head_cross_entropy pairs.
    Host targets are range-checked (free: CuPy would wrap a bad index silently) and then moved to ``like``'s
    backend; targets already on the device are not checked, which would cost a device sync per call.
    """
    if backend.on_host(flat_targets):
        kept = flat_targets != ignore_index
        bad = kept & ((flat_targets < 0) | (flat_targets >= vocab))
        if bad.any():
            first = int(flat_targets[bad][0])
            raise ValueError(f"{op}: target {first} is out of range for V={vocab} (targets must be in "
                             f"[0, {vocab}) or equal ignore_index={ignore_index})")
    if like is not None:
        flat_targets = backend.to_backend_of(flat_targets, like)
    xp = backend.array_module(flat_targets)
    kept = flat_targets != ignore_index  # (N,) bool
    safe_targets = xp.where(kept, flat_targets, 0)
    count = xp.maximum(kept.sum(), 1).astype(dtype)  # all ignored: divide 0 by 1, not 0 by 0
    return safe_targets, kept.astype(dtype) / count


def cross_entropy_forward(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0):
    """Mean negative log-likelihood over the positions whose target is not ignore_index.

    With label smoothing eps (PyTorch's convention), each kept position contributes
        (1 - eps) * (-log p[target]) + eps * mean_v(-log p[v]).
    If every target is ignored the loss is 0 (and so are the gradients).

    logits: (..., V) float; targets: (...) integer, each in [0, V) or == ignore_index
    -> loss: 0-d array of logits' dtype, cache.
    """
    if getattr(logits, "dtype", None) is None or logits.dtype.kind != "f":
        raise TypeError(f"cross_entropy: logits must be a float array, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if getattr(targets, "dtype", None) is None or targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be an integer array, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"cross_entropy: logits must have a vocabulary axis (..., V) with V >= 1, "
                         f"got shape {tuple(logits.shape)}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"cross_entropy: targets have shape {tuple(targets.shape)} but logits {tuple(logits.shape)} "
                         f"need targets of shape {tuple(logits.shape[:-1])}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    xp = backend.array_module(logits)
    dtype = logits.dtype
    vocab = logits.shape[-1]
    eps = float(label_smoothing)

    flat_logits = logits.reshape(-1, vocab)  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    safe_targets, weight = target_weights("cross_entropy", flat_targets, vocab, ignore_index, dtype, like=logits)

    # log p[v] = logits[v] - lse, with lse = m + log(sum_v exp(logits[v] - m)), m = max_v logits[v]
    m = flat_logits.max(axis=-1, keepdims=True)  # (N, 1)
    lse = m + xp.log(xp.exp(flat_logits - m).sum(axis=-1, keepdims=True))  # (N, 1)
    rows = xp.arange(flat_logits.shape[0])
    nll = lse[:, 0] - flat_logits[rows, safe_targets]  # (N,): -log p[target]
    if eps > 0.0:
        # mean_v(-log p[v]) = lse - mean_v(logits[v])
        smooth = lse[:, 0] - flat_logits.mean(axis=-1)
        per_position = (1.0 - eps) * nll + eps * smooth
    else:
        per_position = nll  # (no 0 * smooth term: it would be NaN for logits of -inf)

    loss = xp.asarray((per_position * weight).sum(), dtype=dtype)
    return loss, CrossEntropyCache(flat_logits, lse, safe_targets, weight, eps, tuple(logits.shape))


def cross_entropy_backward(dloss, cache: CrossEntropyCache):
    """dloss: scalar (float or 0-d array) -> dlogits: (..., V) in logits' dtype.

    Derivation. The forward was, with lse[n] = log sum_v exp(logits[n, v]) and t_n the target of row n:
        loss = sum_n weight[n] ((1 - eps) (lse[n] - logits[n, t_n]) + eps (lse[n] - mean_v logits[n, v]))
    The log-sum-exp's derivative is the softmax:  d lse[n] / d logits[n, v] = p[n, v] = exp(logits[n, v] - lse[n]).
        term 1, through lse:                    p[n, v]   (its coefficients (1 - eps) + eps sum to 1)
        term 2, through the target's logit:     -(1 - eps) [v == t_n]
        term 3, through the mean of the logits: -eps / V
    so  dlogits[n, v] = dloss * weight[n] * (p[n, v] - (1 - eps) [v == t_n] - eps / V):  "softmax minus one-hot".
    """
    flat_logits, lse, safe_targets, weight, eps, shape = cache
    xp = backend.array_module(flat_logits)
    dtype = flat_logits.dtype
    vocab = flat_logits.shape[-1]
    p = xp.exp(flat_logits - lse)  # (N, V)
    one_hot = xp.zeros_like(p)
    one_hot[xp.arange(p.shape[0]), safe_targets] = 1.0
    dlogits = p - (1.0 - eps) * one_hot - eps / vocab
    # the upstream scalar in logits' dtype (a float64 0-d dloss must not upcast float32)
    scale = xp.asarray(dloss, dtype=dtype)
    dlogits = dlogits * (weight * scale)[:, None]
    return dlogits.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# the LM head and the loss as one pair: logits = x @ w, then cross-entropy
# ---------------------------------------------------------------------------------------------------------------
DEFAULT_CHUNK = 1024  # the fast tier's rows per chunk: 1024 x 50257 float32 logits are ~200 MB


def check_lm_head_inputs(x, w, targets, chunk) -> None:
    op = "lm_head_cross_entropy"
    for name, a in (("x", x), ("w", w)):
        if getattr(a, "dtype", None) is None or a.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a float array, got {getattr(a, 'dtype', type(a).__name__)}")
    if getattr(targets, "dtype", None) is None or targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be an integer array, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if w.ndim != 2 or w.shape[1] < 1:
        raise ValueError(f"{op}: w must be 2-D (C, V) with V >= 1, got shape {tuple(w.shape)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"{op}: x {tuple(x.shape)} must end in C = {w.shape[0]} channels to match w "
                         f"{tuple(w.shape)}")
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: w is {w.dtype} but x is {x.dtype}; they must match")
    if tuple(targets.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"{op}: targets have shape {tuple(targets.shape)} but x {tuple(x.shape)} needs targets "
                         f"of shape {tuple(x.shape[:-1])}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{op}: chunk must be a positive integer (rows per chunk), got {chunk!r}")



class LMHeadLossCache(NamedTuple):
    linear: LinearCache  # x and w
    loss: CrossEntropyCache  # the logits (N, V) and their log-sum-exp


def lm_head_cross_entropy_forward(x, w, targets, ignore_index: int = -100, chunk: int = DEFAULT_CHUNK):
    """Mean cross-entropy of the logits x @ w against targets (positions equal to ignore_index left out).

    x: (..., C) float; w: (C, V); targets: (...) integer -> loss: 0-d array of x's dtype, cache.
    ``chunk`` is the fast tier's rows per chunk (npformer.kernels.fused_loss, which never holds all the logits);
    here it is only checked: the reference holds the whole (N, V) logits.
    """
    check_lm_head_inputs(x, w, targets, chunk)
    # host targets are checked here (the error names this op), then meet a device x at this boundary
    target_weights("lm_head_cross_entropy", targets.reshape(-1), w.shape[1], ignore_index, x.dtype)
    targets = backend.to_backend_of(targets, x)
    logits, linear_cache = linear_forward(x, w)  # (..., V)
    loss, loss_cache = cross_entropy_forward(logits, targets, ignore_index=ignore_index)
    return loss, LMHeadLossCache(linear_cache, loss_cache)


def lm_head_cross_entropy_backward(dloss, cache: LMHeadLossCache):
    """dloss: scalar -> dx: (..., C), dw: (C, V). The forward upside down: the loss's backward, then the head's."""
    dlogits = cross_entropy_backward(dloss, cache.loss)
    dx, dw, _ = linear_backward(dlogits, cache.linear)
    return dx, dw
