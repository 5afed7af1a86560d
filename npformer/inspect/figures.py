"""Matplotlib, when it is there: figures drawn without pyplot (no global state, no window: any process, headless
included, writes PNGs), saved, and read back, so that what a picture shows can be checked as data.

matplotlib is an optional extra: ``pip install 'npformer[plot]'``. Without it, every plot function raises
``MissingPlotExtra`` (an ImportError) saying so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

INSTALL = "pip install 'npformer[plot]'"


class MissingPlotExtra(ImportError):
    """matplotlib is not installed."""


def require_matplotlib():
    """matplotlib's Figure class, or MissingPlotExtra naming the extra to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingPlotExtra(f"plotting needs matplotlib, an optional extra of npformer: {INSTALL}") from None
    return Figure


def new_figure(width: float, height: float):
    """A matplotlib Figure of (width, height) inches, not registered with pyplot."""
    return require_matplotlib()(figsize=(width, height), layout="constrained")


@dataclass
class Picture:
    """A saved PNG and what was drawn in it: ``images`` (each heatmap's array, axes in order), ``lines`` (each
    line's y values), ``bars`` (each histogram's or bar chart's heights, one array per axes that has bars),
    ``texts`` (every text annotation), and ``data``: the named arrays the plot function computed."""

    path: str
    data: dict = field(default_factory=dict)
    images: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    bars: list = field(default_factory=list)
    texts: list = field(default_factory=list)


def save(fig, path: str, data: dict | None = None, dpi: int = 100) -> Picture:
    """Save ``fig`` as a PNG at ``path`` (its folder created) and return what it shows (read from its axes)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    picture = Picture(path, dict(data or {}))
    for ax in fig.axes:
        picture.images += [np.asarray(im.get_array()) for im in ax.images]
        picture.lines += [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
        heights = [p.get_height() for p in ax.patches if hasattr(p, "get_height")]
        if heights:
            picture.bars.append(np.asarray(heights, dtype=float))
        picture.texts += [t.get_text() for t in ax.texts]
    fig.savefig(path, dpi=dpi)
    return picture


def label(token: str) -> str:
    """A token as an axis label: whitespace made visible."""
    return {" ": "␣", "\n": "\\n", "\t": "\\t", "": "∅"}.get(token, token)
