"""Linear layer and token embedding: the two ops that multiply by (or look up in) a weight matrix.

Shapes: N rows after flattening the leading axes, C_in / C_out channels, V vocabulary, C channels.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend


def _check_float(op: str, name: str, a) -> None:
    if getattr(a, "dtype", None) is None or a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a float array, got {getattr(a, 'dtype', type(a).__name__)}")


# ---------------------------------------------------------------------------------------------------------------
# linear: y = x @ w + b
# ---------------------------------------------------------------------------------------------------------------
class LinearCache(NamedTuple):
    x2d: object  # (N, C_in): the input with its leading axes flattened
    w: object  # (C_in, C_out)
    has_bias: bool
    x_shape: tuple  # (..., C_in): to give dx the input's shape back


def linear_forward(x, w, b=None):
    """y = x @ w + b.

    x: (..., C_in) float; w: (C_in, C_out); b: (C_out,) or None -> y: (..., C_out), cache.
    """
    _check_float("linear", "x", x)
    _check_float("linear", "w", w)
    if w.ndim != 2:
        raise ValueError(f"linear: w must be 2-D (C_in, C_out), got shape {tuple(w.shape)}")
    if x.ndim < 1:
        raise ValueError("linear: x must have at least one axis (..., C_in), got a 0-d array")
    c_in, c_out = w.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"linear: x has {x.shape[-1]} input channels but w expects C_in={c_in} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    if w.dtype != x.dtype:
        raise TypeError(f"linear: w is {w.dtype} but x is {x.dtype}; they must match")
    if b is not None:
        _check_float("linear", "b", b)
        if tuple(b.shape) != (c_out,):
            raise ValueError(f"linear: b must have shape (C_out,) = ({c_out},), got {tuple(b.shape)}")
        if b.dtype != x.dtype:
            raise TypeError(f"linear: b is {b.dtype} but x is {x.dtype}; they must match")

    x2d = x.reshape(-1, c_in)  # (N, C_in)
    y2d = x2d @ w  # (N, C_out)
    if b is not None:
        y2d = y2d + b
    y = y2d.reshape(tuple(x.shape[:-1]) + (c_out,))
    return y, LinearCache(x2d, w, b is not None, tuple(x.shape))


def linear_backward(dy, cache: LinearCache):
    """Gradients of y = x @ w + b.

    dy: (..., C_out) -> dx: (..., C_in), dw: (C_in, C_out), db: (C_out,) or None when the forward had no bias.

    Derivation. The forward was, for every row n:  y[n, o] = sum_i x[n, i] w[i, o] + b[o].
        x[n, i] reaches every output of its row through w[i, o]:   dL/dx[n, i] = sum_o dy[n, o] w[i, o]   (dy @ w^T)
        w[i, o] reaches output o of every row through x[n, i]:     dL/dw[i, o] = sum_n x[n, i] dy[n, o]   (x^T @ dy)
        b[o] is added to output o of every row:                    dL/db[o] = sum_n dy[n, o]
    """
    x2d, w, has_bias, x_shape = cache
    dy2d = dy.reshape(-1, w.shape[1])  # (N, C_out)
    dx = (dy2d @ w.T).reshape(x_shape)
    dw = x2d.T @ dy2d  # one product over all N rows
    db = dy2d.sum(axis=0) if has_bias else None
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------------------
# embedding: y = table[ids]
# ---------------------------------------------------------------------------------------------------------------
class EmbeddingCache(NamedTuple):
    ids: object  # (...) integer
    vocab_size: int  # V
    dtype: object  # the table's dtype, for dtable


def check_id_range(op: str, ids, vocab: int) -> None:
    """Host ids must lie in [0, vocab): a ValueError naming the first bad one."""
    if ids.size > 0:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: id {bad} is out of range for a table of V={vocab} rows (ids must be in "
                             f"[0, {vocab}))")


def embedding_forward(ids, table):
    """y = table[ids]: one row of the table per id.

    ids: (...) integer, each in [0, V); table: (V, C) float -> y: (..., C), cache.
    Host ids meet a device table at this boundary: they are range-checked on the host (free) and uploaded. Ids
    already on the device are not range-checked (that would cost a device sync), and CuPy wraps bad ids silently.
    """
    if getattr(ids, "dtype", None) is None or ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer array, got {getattr(ids, 'dtype', type(ids).__name__)}")
    _check_float("embedding", "table", table)
    if table.ndim != 2:
        raise ValueError(f"embedding: table must be 2-D (V, C), got shape {tuple(table.shape)}")
    vocab = table.shape[0]
    if backend.on_host(ids):
        # CuPy wraps out-of-range indices instead of raising: check them here, where it is free, then upload.
        # Ids already on the device are not checked (it would cost a device sync per call).
        check_id_range("embedding", ids, vocab)
        ids = backend.to_backend_of(ids, table)
    y = table[ids]  # (..., C)
    return y, EmbeddingCache(ids, vocab, table.dtype)


def embedding_backward(dy, cache: EmbeddingCache, dtable=None):
    """Gradient of y = table[ids] with respect to the table.

    dy: (..., C) -> dtable: (V, C), rows of repeated ids summed. Given ``dtable`` (a layer passes its .grad), the
    gradient is added into it and it is returned, so no (V, C) temporary is made; else a new array is returned.

    Derivation. The forward was  y[p, :] = table[ids[p], :]  for every position p, so row v of the table reached
    every position whose id is v:
        dL/dtable[v, :] = sum over positions p with ids[p] == v of dy[p, :]
    a scatter-add (``table[ids] += dy`` would keep only one of each repeated id; backend.scatter_add sums them).
    """
    ids, vocab, dtype = cache
    xp = backend.array_module(dy)
    if dtable is None:
        dtable = xp.zeros((vocab, dy.shape[-1]), dtype=dtype)
    backend.scatter_add(dtable, ids, dy)
    return dtable
