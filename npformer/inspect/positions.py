"""Positional encodings, seen: the sinusoidal table, how similar positions are under each kind of encoding, and
the check that RoPE's attention score depends only on the offset between two positions.

Shapes: T positions, C channels, D head size.

    sinusoidal   PE (T, C) is added to the token embeddings; similarity[m, n] = PE[m] . PE[n]
    learned      a trained table wpe (T, C) (a GPT checkpoint's); similarity[m, n] = wpe[m] . wpe[n]
    RoPE         nothing is added: q and k are rotated by their positions, so the score of a query q at m and a
                 key k at n is S[m, n] = R_m q . R_n k = q . R_(n - m) k, which depends on n - m alone: every
                 diagonal of S is constant (a Toeplitz matrix). ``rope_offset_error`` measures how far from
                 constant the diagonals are (float rounding: ~1e-15 in float64).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..functional.positions import rope_forward, sinusoidal_positions
from .figures import Picture, new_figure, save

CMAP = "viridis"


def sinusoidal_table(T: int, C: int) -> np.ndarray:
    """(T, C) float64 on the host: npformer's sinusoidal table (``functional.sinusoidal_positions``)."""
    with backend.use_backend("numpy"):  # the table is built on the active backend: here, the host
        return sinusoidal_positions(T, C, dtype=np.float64)


def similarity(table) -> np.ndarray:
    """(T, C) -> (T, T) dot products between positions' vectors."""
    table = backend.to_numpy(table).astype(np.float64)
    return table @ table.T


def rope_scores(T: int, D: int, base: float = 10000.0, seed: int = 0) -> np.ndarray:
    """(T, T): S[m, n] = rope(q, m) . rope(k, n) for one fixed random query q and key k (D,), with npformer's
    ``functional.rope_forward`` in float64 on the host."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, D))
    positions = np.arange(T, dtype=np.int64)
    rq, _ = rope_forward(np.tile(q, (T, 1)), positions, base=base)  # (T, D): q rotated to each position
    rk, _ = rope_forward(np.tile(k, (T, 1)), positions, base=base)
    return rq @ rk.T


def rope_offset_error(S) -> float:
    """max over offsets d of max |S[m, m + d] - mean of that diagonal|: 0 when S depends on the offset alone."""
    S = backend.to_numpy(S).astype(np.float64)
    T = S.shape[0]
    worst = 0.0
    for d in range(-(T - 1), T):
        diagonal = np.diagonal(S, offset=d)
        worst = max(worst, float(np.abs(diagonal - diagonal.mean()).max()))
    return worst


def plot_sinusoidal_table(path: str, T: int = 128, C: int = 64) -> Picture:
    """The (T, C) sinusoidal table as a heatmap: fast sines in the first columns, slow ones in the last."""
    table = sinusoidal_table(T, C)
    fig = new_figure(6.5, 4.5)
    ax = fig.subplots()
    image = ax.imshow(table, cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xlabel("channel")
    ax.set_ylabel("position")
    ax.set_title(f"sinusoidal positions ({T} x {C})")
    fig.colorbar(image, ax=ax)
    return save(fig, path, data=dict(table=table))


def plot_position_similarity(path: str, T: int = 64, C: int = 64, learned=None, head_dim: int = 32,
                             rope_base: float = 10000.0) -> Picture:
    """Side by side: position similarity (dot products) for sinusoidal positions, a learned table when given
    ((T', C') from a checkpoint, its first T rows), and RoPE's score S[m, n] for one query and key; last, RoPE's
    score against the offset n - m for every pair (m, n), one curve if it depends on the offset alone, with the
    largest deviation from that written on the plot."""
    panels = {"sinusoidal": similarity(sinusoidal_table(T, C))}
    if learned is not None:
        learned = backend.to_numpy(learned).astype(np.float64)[:T]  # a device model's table comes home
        panels["learned"] = similarity(learned)
    S = rope_scores(T, head_dim, rope_base)
    panels["rope"] = S
    error = rope_offset_error(S)
    fig = new_figure(3.4 * (len(panels) + 1), 3.6)
    axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
    titles = {"sinusoidal": f"sinusoidal: PE[m] . PE[n] (C={C})", "learned": "learned: wpe[m] . wpe[n]",
              "rope": f"RoPE: R_m q . R_n k (D={head_dim})"}
    for ax, (name, matrix) in zip(axes, panels.items()):
        image = ax.imshow(matrix, cmap=CMAP, interpolation="nearest")
        ax.set_title(titles[name], fontsize=9)
        ax.set_xlabel("position n")
        ax.set_ylabel("position m")
        fig.colorbar(image, ax=ax, shrink=0.7)
    ax = axes[-1]
    m, n = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    ax.plot((n - m).reshape(-1), S.reshape(-1), ".", ms=2, alpha=0.5)
    ax.set_xlabel("offset n - m")
    ax.set_ylabel("RoPE score")
    ax.set_title("RoPE: score vs offset, all pairs", fontsize=9)
    ax.text(0.02, 0.02, f"max deviation from a function\nof the offset: {error:.1e}", transform=ax.transAxes,
            fontsize=8, va="bottom")
    return save(fig, path, data=dict(panels, rope_offset_error=error))
