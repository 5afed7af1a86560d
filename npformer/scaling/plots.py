"""The sweep's figure (matplotlib, optional): loss against N with one curve per D, loss against compute with the
frontier, and the IsoFLOP profiles, the fitted curves over the measured points.

    plot_sweep(runs, analysis, "out/scaling/scaling.png")   # False when matplotlib is not installed
"""

from __future__ import annotations

import numpy as np


def plot_sweep(runs: list[dict], analysis: dict, path: str, title: str | None = None, dpi: int = 80) -> bool:
    """Write the three-panel figure to ``path`` (PNG); return False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # matplotlib is optional
        return False
    from ..io.atomic import SHARED, atomic_open

    law = analysis["law"]
    N = np.array([r["N"] for r in runs], dtype=np.float64)
    D = np.array([r["D"] for r in runs], dtype=np.float64)
    L = np.array([r["val_loss"] for r in runs], dtype=np.float64)
    C = 6 * N * D
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    cmap = plt.get_cmap("viridis")

    ax = axes[0]
    d_values = np.unique(D)
    n_line = np.geomspace(N.min() / 1.3, N.max() * 1.3, 100)
    for i, d in enumerate(d_values):
        color = cmap(i / max(len(d_values) - 1, 1))
        pick = D == d
        order = np.argsort(N[pick])
        ax.plot(N[pick][order], L[pick][order], "o", color=color, label=f"D = {d:.3g}")
        ax.plot(n_line, law.loss(n_line, d), "-", color=color, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("N (non-embedding parameters)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title(f"loss vs N; fit alpha={law.alpha:.2f}, beta={law.beta:.2f}, E={law.E:.2f}")
    ax.legend(fontsize=7)

    ax = axes[1]
    n_values = np.unique(N)
    for i, n in enumerate(n_values):
        pick = N == n
        order = np.argsort(C[pick])
        ax.plot(C[pick][order], L[pick][order], "o-", color=cmap(i / max(len(n_values) - 1, 1)), ms=4, lw=0.8,
                label=f"N = {n:,.0f}")
    c_line = np.geomspace(C.min(), C.max(), 100)
    ax.plot(c_line, law.frontier(c_line, (N.min(), N.max())), "k--", lw=1.5, label="fitted frontier (grid's N)")
    order = np.argsort(C)
    envelope = np.minimum.accumulate(L[order])
    ax.step(C[order], envelope, "r-", where="post", lw=1, alpha=0.7, label="measured frontier")
    ax.set_xscale("log")
    ax.set_xlabel("C = 6ND (FLOPs)")
    ax.set_ylabel("validation loss")
    ax.set_title("loss vs compute")
    ax.legend(fontsize=7)

    ax = axes[2]
    found = analysis["profiles"]
    for i, p in enumerate(found):
        color = plt.get_cmap("plasma")(i / max(len(found) - 1, 1))
        ax.plot(p.N, p.loss, "o", color=color, ms=4)
        x = np.linspace(np.log(p.N.min()), np.log(p.N.max()), 50)
        ax.plot(np.exp(x), np.polyval(p.coeffs, x), "-", color=color, lw=1, label=f"C = {p.C:.2g}")
        if p.N_opt is not None:
            ax.plot([p.N_opt], [p.loss_opt], "*", color=color, ms=12, mec="k")
    iso = analysis["isoflop"]
    ax.set_xscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("validation loss (interpolated at D = C/6N)")
    ax.set_title("IsoFLOP profiles" + (f": N_opt ~ C^{iso['a']:.2f}" if iso else " (no minima inside the grid)"))
    if found:
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb", permissions=SHARED) as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return True
