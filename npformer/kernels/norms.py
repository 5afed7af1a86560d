"""The fast tier's LayerNorm and RMSNorm: the reference maths (npformer.functional.norms, whose derivations these
follow) computed in place over cache-sized blocks of rows, spread over threads by ``blockwise``.

Why: the reference makes about eight full-size temporaries per call, each streamed through memory; here a block
of rows (about 512 KiB) makes every pass in the cache, into preallocated outputs, and row means are one BLAS
matrix-vector product. Same signatures, same caches (so either tier's backward takes either tier's cache), and
tested equal to the reference.

Shapes: x (..., C); statistics per row of C.
"""

from __future__ import annotations

from ..backend import array_module
from ..functional.norms import LayerNormCache, RMSNormCache, check_eps, check_norm_inputs
from .cpu import blockwise


# ---------------------------------------------------------------------------------------------------------------
# LayerNorm: y = (x - mean) / sqrt(var + eps) * w + b
# ---------------------------------------------------------------------------------------------------------------
def layernorm_forward(x, w, b, eps: float = 1e-5):
    """LayerNorm over the last axis, in place, block by block (same maths and cache as the reference).

    x: (..., C) float; w, b: (C,) -> y: (..., C), cache.
    """
    check_norm_inputs("layernorm", x, {"w": w, "b": b})
    eps = check_eps("layernorm", eps)
    xp = array_module(x)
    C = x.shape[-1]
    x2d = x.reshape(-1, C)  # (N, C)
    xhat = xp.empty(x2d.shape, dtype=x.dtype)
    rstd = xp.empty((x2d.shape[0], 1), dtype=x.dtype)
    y = xp.empty(x2d.shape, dtype=x.dtype)
    mean_weights = xp.full((C, 1), 1.0 / C, dtype=x.dtype)  # row means as a matrix-vector product (BLAS)

    def kernel(x, xhat, rstd, y):  # a block of rows, every step in place
        mean = x @ mean_weights  # (n, 1)
        xp.subtract(x, mean, out=xhat)  # xc = x - mean
        xp.multiply(xhat, xhat, out=y)  # (y as scratch)
        var = y @ mean_weights  # biased variance like PyTorch
        var += eps
        xp.sqrt(var, out=var)
        xp.divide(1.0, var, out=rstd)  # rstd = 1 / sqrt(var + eps)
        xhat *= rstd  # xhat = xc * rstd
        xp.multiply(xhat, w, out=y)
        y += b  # y = xhat * w + b

    blockwise(kernel, x2d, xhat, rstd, y)
    lead = tuple(x.shape[:-1])
    return y.reshape(x.shape), LayerNormCache(xhat.reshape(x.shape), rstd.reshape(lead + (1,)), w)


def layernorm_backward(dy, cache: LayerNormCache):
    """Gradients of LayerNorm, in place, block by block (see functional.norms for the derivation).

    dy: (..., C) -> dx: (..., C), dw: (C,), db: (C,)   (dw, db summed over all leading axes).
    """
    xhat, rstd, w = cache
    xp = array_module(xhat)
    C = xhat.shape[-1]
    dy2d = xp.ascontiguousarray(dy).reshape(-1, C)  # (N, C)
    xhat2d = xhat.reshape(-1, C)
    # forward: y = xhat * w + b
    db = dy2d.sum(axis=0)  # dL/db = sum over rows of dy
    dw = xp.einsum("nc,nc->c", dy2d, xhat2d)  # dL/dw = sum over rows of dy * xhat (no (N, C) temporary)
    # forward: xhat = (x - mean) * rstd, with mean = mean_j(x_j) and rstd = (mean_j((x_j - mean)^2) + eps)^(-1/2).
    # x reaches dx_i along three paths (llm.c's "term 1, term 2, term 3"):
    #   term 1, through x_i directly:        rstd * dxhat_i
    #   term 2, through the mean:           -rstd * mean_j(dxhat_j)
    #   term 3, through rstd (the variance): -rstd * xhat_i * mean_j(dxhat_j * xhat_j)
    # (term 3's mean-path contribution vanishes because the xhat_j sum to zero.)
    dx = xp.empty(dy2d.shape, dtype=xp.result_type(dy2d, xhat))
    mean_weights = xp.full((C, 1), 1.0 / C, dtype=dx.dtype)  # row means as a matrix-vector product (BLAS)

    def kernel(dy, xhat, rstd, dx):  # a block of rows, in place in dx and one block-sized scratch
        xp.multiply(dy, w, out=dx)  # dxhat = dL/dxhat
        # first, the two reductions:
        dxhat_mean = dx @ mean_weights  # (n, 1)
        scratch = dx * xhat
        dxhat_xhat_mean = scratch @ mean_weights
        # then the three terms together: dx = rstd * (dxhat - dxhat_mean - xhat * dxhat_xhat_mean)
        xp.multiply(xhat, dxhat_xhat_mean, out=scratch)
        dx -= dxhat_mean
        dx -= scratch
        dx *= rstd

    blockwise(kernel, dy2d, xhat2d, rstd.reshape(-1, 1), dx)
    return dx.reshape(xhat.shape), dw, db


# ---------------------------------------------------------------------------------------------------------------
# RMSNorm: y = x / sqrt(mean(x^2) + eps) * w
# ---------------------------------------------------------------------------------------------------------------
def rmsnorm_forward(x, w, eps: float = 1e-6):
    """RMSNorm over the last axis, in place, block by block. x: (..., C) float; w: (C,) -> y: (..., C), cache."""
    check_norm_inputs("rmsnorm", x, {"w": w})
    eps = check_eps("rmsnorm", eps)
    xp = array_module(x)
    C = x.shape[-1]
    x2d = x.reshape(-1, C)  # (N, C)
    xhat = xp.empty(x2d.shape, dtype=x.dtype)
    rrms = xp.empty((x2d.shape[0], 1), dtype=x.dtype)
    y = xp.empty(x2d.shape, dtype=x.dtype)
    mean_weights = xp.full((C, 1), 1.0 / C, dtype=x.dtype)

    def kernel(x, xhat, rrms, y):  # a block of rows
        xp.multiply(x, x, out=y)  # (y as scratch) x^2
        ms = y @ mean_weights  # mean(x^2), (n, 1)
        ms += eps
        xp.sqrt(ms, out=ms)
        xp.divide(1.0, ms, out=rrms)  # r = 1 / sqrt(mean(x^2) + eps)
        xp.multiply(x, rrms, out=xhat)
        xp.multiply(xhat, w, out=y)

    blockwise(kernel, x2d, xhat, rrms, y)
    lead = tuple(x.shape[:-1])
    return y.reshape(x.shape), RMSNormCache(xhat.reshape(x.shape), rrms.reshape(lead + (1,)), w)


def rmsnorm_backward(dy, cache: RMSNormCache):
    """Gradients of RMSNorm, in place, block by block. dy: (..., C) -> dx: (..., C), dw: (C,)."""
    xhat, rrms, w = cache
    xp = array_module(xhat)
    C = xhat.shape[-1]
    dy2d = xp.ascontiguousarray(dy).reshape(-1, C)
    xhat2d = xhat.reshape(-1, C)
    dw = xp.einsum("nc,nc->c", dy2d, xhat2d)
    dx = xp.empty(dy2d.shape, dtype=xp.result_type(dy2d, xhat))
    mean_weights = xp.full((C, 1), 1.0 / C, dtype=dx.dtype)

    def kernel(dy, xhat, rrms, dx):  # dx = r * (dxhat - xhat * mean(dxhat * xhat))
        xp.multiply(dy, w, out=dx)  # dxhat
        scratch = dx * xhat
        dxhat_xhat_mean = scratch @ mean_weights
        xp.multiply(xhat, dxhat_xhat_mean, out=scratch)
        dx -= scratch
        dx *= rrms

    blockwise(kernel, dy2d, xhat2d, rrms.reshape(-1, 1), dx)
    return dx.reshape(xhat.shape), dw
