"""A Vision Transformer's patch embedding is a reshape followed by a linear map; this is the reshape, as a pair.

Shapes: B batch, C channels, H x W image, p the patch size (dividing H and W), gh = H / p and gw = W / p the patch
grid, N = gh * gw patches, P = C * p * p the length of one flattened patch.

    images (B, C, H, W)
      -> (B, C, gh, p, gw, p)         split each spatial axis into (grid index, offset inside the patch)
      -> (B, gh, gw, C, p, p)         grid axes first, each patch's pixels last
      -> patches (B, N, P)            patch n = (row, col) = (n // gw, n % gw), row-major over the grid

Each patch's vector is ordered (channel, row in patch, column in patch): the order of a PyTorch
``Conv2d(C, E, kernel_size=p, stride=p)`` weight flattened to (E, P), so ``patches @ W.reshape(E, P).T`` is that
convolution (a test checks it). The linear map that follows is npformer's ``Linear`` (its own pair).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple


class PatchesCache(NamedTuple):
    shape: tuple  # the images' shape (B, C, H, W)
    patch: int  # p


def check_patch_size(op: str, shape, patch) -> tuple[int, int]:
    """The patch grid (gh, gw) of images of ``shape`` (B, C, H, W) cut into p x p patches; ValueError if p is not a
    positive integer dividing H and W."""
    if isinstance(patch, bool) or not isinstance(patch, numbers.Integral) or patch < 1:
        raise ValueError(f"{op}: patch size must be a positive integer, got {patch!r}")
    if len(shape) != 4:
        raise ValueError(f"{op}: images must be (B, C, H, W), got shape {tuple(shape)}")
    B, C, H, W = shape
    if min(shape) < 1:
        raise ValueError(f"{op}: images must be non-empty, got shape {tuple(shape)}")
    if H % patch or W % patch:
        raise ValueError(f"{op}: patch size {patch} does not divide the image size {H}x{W}")
    return H // patch, W // patch


def patches_forward(images, patch: int):
    """images (B, C, H, W) -> patches (B, N, C*p*p), N = (H/p)(W/p), and the cache for ``patches_backward``.

    Patch n covers rows p*(n // gw) .. +p-1 and columns p*(n % gw) .. +p-1 of every channel (see the module
    docstring for the order inside a patch). The output is a copy (the transpose makes it non-contiguous).
    """
    if not hasattr(images, "ndim") or getattr(images, "dtype", None) is None or images.dtype.kind != "f":
        raise TypeError(f"patches: images must be a float array (B, C, H, W), got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    gh, gw = check_patch_size("patches", tuple(images.shape), patch)
    B, C, H, W = images.shape
    p = int(patch)
    x = images.reshape(B, C, gh, p, gw, p)  # (B, C, grid row, row in patch, grid col, col in patch)
    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, gh * gw, C * p * p), PatchesCache((B, C, H, W), p)


def patches_backward(dpatches, cache: PatchesCache):
    """dpatches (B, N, C*p*p) -> dimages (B, C, H, W).

    Derivation: every step of the forward only moves entries (each pixel lands in exactly one place of exactly one
    patch, nothing is added or dropped), so patches = Pi(images) for a permutation Pi of the entries, and
    d images = Pi^T(d patches) = Pi^-1(d patches): the forward's steps undone in reverse order.
        patches = x.reshape(B, N, P)           ->  dx = dpatches.reshape(B, gh, gw, C, p, p)
        x = x6.transpose(0, 2, 4, 1, 3, 5)     ->  dx6 = dx.transpose(0, 3, 1, 4, 2, 5)  (the inverse permutation)
        x6 = images.reshape(B, C, gh, p, gw, p) ->  dimages = dx6.reshape(B, C, H, W)
    """
    B, C, H, W = cache.shape
    p = cache.patch
    gh, gw = H // p, W // p
    if tuple(dpatches.shape) != (B, gh * gw, C * p * p):
        raise ValueError(f"patches: dpatches must have shape {(B, gh * gw, C * p * p)}, got {tuple(dpatches.shape)}")
    d = dpatches.reshape(B, gh, gw, C, p, p)
    d = d.transpose(0, 3, 1, 4, 2, 5)  # (B, C, gh, p, gw, p): axis k of the transposed array was axis perm[k]
    return d.reshape(B, C, H, W)
