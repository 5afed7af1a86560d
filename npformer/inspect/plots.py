"""Pictures of a model's inside, each a PNG and the data it shows (``figures.Picture``); matplotlib is needed
(pip install 'npformer[plot]'), pyplot is not: they draw headless anywhere.

Shapes: L layers, B batch, H heads, Tq queries, Tk keys, T time.

    plot_attention(maps, path, queries, keys)    layers x heads grid of heatmaps, tokens on the axes
    plot_head_summary(summary, path)             entropy, attended distance, previous-/first-token weight per head
    plot_masks(path)                             the masks attention applies: causal, padding, both, cross
    plot_norm_histograms(blocks, path)           activations before and after each norm, per layer
    plot_gradient_flow(rows, path)               per-layer gradient norms and update-to-parameter ratios over steps

Positional encodings are in ``npformer.inspect.positions``.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..functional.attention_inputs import allowed_scores, check_attention_inputs
from ..nn.attention import padding_mask
from .figures import Picture, label, new_figure, save
from .gradient_flow import by_layer
from .summaries import HeadSummary

CMAP = "viridis"


def _token_ticks(ax, queries, keys, left: bool, bottom: bool, fontsize: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if bottom and keys is not None:
        ax.set_xticks(range(len(keys)), [label(t) for t in keys], fontsize=fontsize, rotation=90)
    if left and queries is not None:
        ax.set_yticks(range(len(queries)), [label(t) for t in queries], fontsize=fontsize)


def plot_attention(maps, path: str, queries=None, keys=None, batch: int = 0, title: str | None = None) -> Picture:
    """maps: (L, B, H, Tq, Tk) attention probabilities (``attention_maps``); one heatmap per layer (rows) and head
    (columns) of sequence ``batch``: row i is query i's weights over the keys, 0 (dark) to 1 (bright).
    queries / keys: the tokens (strings) of the query and key positions (keys default to queries)."""
    P = backend.to_numpy(maps).astype(np.float64)
    if P.ndim != 5:
        raise ValueError(f"plot_attention: maps must be (L, B, H, Tq, Tk), got shape {P.shape}")
    P = P[:, batch]
    L, H, Tq, Tk = P.shape
    keys = queries if keys is None else keys
    for name, tokens, n in (("queries", queries, Tq), ("keys", keys, Tk)):
        if tokens is not None and len(tokens) != n:
            raise ValueError(f"plot_attention: {len(tokens)} {name} tokens for {n} positions")
    fontsize = max(3.0, min(8.0, 220.0 / max(Tq, Tk)))
    side = max(1.6, min(3.2, 0.09 * max(Tq, Tk)))
    fig = new_figure(side * H + 1.2, side * L + 0.6)
    axes = fig.subplots(L, H, squeeze=False)
    image = None
    for l in range(L):
        for h in range(H):
            ax = axes[l, h]
            image = ax.imshow(P[l, h], vmin=0.0, vmax=1.0, cmap=CMAP, interpolation="nearest")
            _token_ticks(ax, queries, keys, left=h == 0, bottom=l == L - 1, fontsize=fontsize)
            ax.set_title(f"layer {l} head {h}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title)
    return save(fig, path, data=dict(maps=P))


def plot_head_summary(summary: HeadSummary, path: str) -> Picture:
    """Four (L, H) heatmaps, each cell annotated: attention entropy, mean attended distance, weight on the
    previous token and on the first token; heads with a role are named in the last two."""
    panels = (("entropy (nats)", summary.entropy), ("mean attended distance", summary.distance),
              ("previous-token weight", summary.previous_token), ("first-token weight", summary.first_token))
    L, H = summary.entropy.shape
    fig = new_figure(4 * 2.6 + 0.5, max(2.4, 0.5 * L + 1.4))
    axes = fig.subplots(1, 4, squeeze=False)[0]
    for ax, (name, values) in zip(axes, panels):
        weight = "weight" in name
        ax.imshow(values, cmap=CMAP, vmin=0.0 if weight else None, vmax=1.0 if weight else None, aspect="auto",
                  interpolation="nearest")
        for l in range(L):
            for h in range(H):
                role = summary.role[l, h]
                mark = "*" if weight and role and role.startswith(name.split("-")[0]) else ""
                ax.text(h, l, f"{values[l, h]:.2f}{mark}", ha="center", va="center", fontsize=7, color="white")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
    fig.suptitle(f"per head (* previous-/first-token head: weight >= {summary.threshold:g})", fontsize=9)
    return save(fig, path, data=dict(entropy=summary.entropy, distance=summary.distance,
                                     previous_token=summary.previous_token, first_token=summary.first_token))


def _allowed(Tq: int, Tk: int, mask=None, causal: bool = False) -> np.ndarray:
    """(Tq, Tk): where a query may attend, by the very functions every attention kernel applies."""
    q = np.zeros((1, 1, Tq, 1))
    k = np.zeros((1, 1, Tk, 1))
    spec = check_attention_inputs("plot_masks", q, k, k, mask, causal)
    allowed = allowed_scores(np, spec)
    return np.ones((Tq, Tk), dtype=bool) if allowed is None else np.broadcast_to(allowed, (1, 1, Tq, Tk))[0, 0]


def mask_examples(T: int = 10, length: int = 7, S: int = 8, source_length: int = 5) -> dict:
    """The masks attention applies, as (Tq, Tk) booleans (True: may attend):
    causal (a GPT's and a decoder's self-attention), padding (an encoder's, for a sequence of ``length`` real
    tokens padded to T), causal + padding, and cross (T decoder queries over a source of ``source_length`` real
    tokens padded to S). npformer has no windowed (sliding-window) mask yet."""
    if not (1 <= length <= T and 1 <= source_length <= S):
        raise ValueError(f"mask_examples: need 1 <= length <= T and 1 <= source_length <= S, got {length}, {T}, "
                         f"{source_length}, {S}")
    valid = padding_mask(np.arange(T)[None, :] < length)  # (1, 1, 1, T)
    source = padding_mask(np.arange(S)[None, :] < source_length)  # (1, 1, 1, S)
    return {"causal": _allowed(T, T, causal=True), "padding": _allowed(T, T, mask=valid),
            "causal + padding": _allowed(T, T, mask=valid, causal=True), "cross": _allowed(T, S, mask=source)}


def plot_masks(path: str, T: int = 10, length: int = 7, S: int = 8, source_length: int = 5) -> Picture:
    """The masks of ``mask_examples`` side by side: bright where a query (row) may attend to a key (column)."""
    masks = mask_examples(T, length, S, source_length)
    fig = new_figure(3.0 * len(masks), 3.4)
    axes = fig.subplots(1, len(masks), squeeze=False)[0]
    captions = {"causal": "causal (GPT, decoder)", "padding": f"padding (encoder, {length} of {T} real)",
                "causal + padding": "causal + padding", "cross": f"cross ({source_length} of {S} source real)"}
    for ax, (name, m) in zip(axes, masks.items()):
        ax.imshow(m.astype(float), vmin=0.0, vmax=1.0, cmap=CMAP, interpolation="nearest")
        ax.set_title(captions[name], fontsize=9)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    return save(fig, path, data=masks)


def plot_norm_histograms(blocks, path: str, bins: int = 60, title: str | None = None) -> Picture:
    """Histograms of the activations entering (before) and leaving (after) every norm, one row per layer, one
    column per norm of the block. blocks: a list of ``BlockActivations`` (one stack of ``block_activations``).
    Picture.data["layer{l}.{norm}"] = (before, after) flattened; the legend gives each one's mean and std."""
    if not blocks:
        raise ValueError("plot_norm_histograms: no blocks")
    names = list(blocks[0].norms)
    fig = new_figure(3.4 * len(names), 2.0 * len(blocks) + 0.6)
    axes = fig.subplots(len(blocks), len(names), squeeze=False)
    data = {}
    for l, block in enumerate(blocks):
        for j, name in enumerate(names):
            before, after = (backend.to_numpy(a).astype(np.float64).reshape(-1) for a in block.norms[name])
            data[f"layer{l}.{name}"] = (before, after)
            edges = np.linspace(min(before.min(), after.min()), max(before.max(), after.max()), bins + 1)
            ax = axes[l, j]
            for values, which, color in ((before, "before", "tab:orange"), (after, "after", "tab:blue")):
                ax.hist(values, bins=edges, alpha=0.55, color=color,
                        label=f"{which}: {values.mean():+.2f} ± {values.std():.2f}")
            ax.set_title(f"layer {l} {name}", fontsize=8)
            ax.legend(fontsize=6)
            ax.tick_params(labelsize=6)
    fig.suptitle(title or "activations before and after each norm", fontsize=9)
    return save(fig, path, data=data)


def plot_gradient_flow(rows: list[dict], path: str, title: str | None = None) -> Picture:
    """rows: the trainer's gradient-flow records (Trainer.gradient_flow, or gradient_flow.csv read back). Left:
    each layer's gradient norm over the steps; right: its update-to-parameter ratio, with 1e-3 dashed.
    Picture.lines: the layers' gradient norms, then their ratios, then the reference line."""
    layers = by_layer(rows)
    if not layers:
        raise ValueError("plot_gradient_flow: no gradient-flow records (does the run log any step?)")
    fig = new_figure(12.0, 4.2)
    ax_grad, ax_ratio = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(layers))]
    for (layer, (steps, grads, _)), color in zip(layers.items(), colors):
        ax_grad.plot(steps, grads, color=color, lw=1.2, label=layer)
    for (layer, (steps, _, ratios)), color in zip(layers.items(), colors):
        ax_ratio.plot(steps, ratios, color=color, lw=1.2, label=layer)
    ax_ratio.axhline(1e-3, color="gray", ls="--", lw=1)
    for ax, name in ((ax_grad, "gradient norm (before clipping)"), (ax_ratio, "update / parameter (norms)")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    ax_ratio.legend(fontsize=7, ncol=2 if len(layers) > 8 else 1, loc="best")
    if title:
        fig.suptitle(title)
    return save(fig, path, data={layer: np.array(values) for layer, values in layers.items()})
