"""Chinchilla's approach 2 on a grid of runs: IsoFLOP profiles, their minima, and N_opt ~ C^a, D_opt ~ C^b.

Hoffmann et al. trained a set of model sizes at each of a few fixed compute budgets C and fitted a parabola to loss
against log N at each, whose minimum is N_opt(C). A grid of N x D runs has no two runs at the same C, so each
model size's loss at D = C / 6N is read off its own runs, interpolated linearly in (log D, log L) between the two
token budgets around it (never extrapolated). A budget C gives a profile when at least ``min_points`` sizes reach
it; its minimum counts when the parabola opens upwards and its vertex lies inside the sizes it was fitted to.
Then log N_opt = a log C + const by least squares, and D_opt = C / 6 N_opt gives b = 1 - a.

Error bars (``bootstrap_isoflop``): a residual bootstrap, since a resampled grid loses the rows the interpolation
needs: each run's log loss is replaced by the approach-3 law's value plus a residual drawn with replacement from
that law's residuals, and the profiles, minima and slope are found again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Profile:
    """One IsoFLOP profile: compute C, the (N, loss) points read off the grid, the parabola in log N, and the
    minimum (N_opt, loss_opt; None when the parabola has none inside the points)."""

    C: float
    N: np.ndarray
    loss: np.ndarray
    coeffs: np.ndarray  # loss = c2 x^2 + c1 x + c0, x = log N
    N_opt: float | None
    loss_opt: float | None


def _interpolate(logD_runs: np.ndarray, logL_runs: np.ndarray, logD: float) -> float | None:
    order = np.argsort(logD_runs)
    x, y = logD_runs[order], logL_runs[order]
    if logD < x[0] - 1e-9 or logD > x[-1] + 1e-9:
        return None
    return float(np.interp(logD, x, y))


def profiles(N, D, L, levels: int = 8, min_points: int = 3, compute=None) -> list[Profile]:
    """IsoFLOP profiles at ``levels`` compute budgets spaced evenly in log C over the range where at least
    ``min_points`` model sizes reach them (or at the budgets ``compute`` when given). N, D, L: (n,) per run."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    sizes = np.unique(N)
    groups = {n: (np.log(D[N == n]), np.log(L[N == n])) for n in sizes}
    groups = {n: g for n, g in groups.items() if g[0].size >= 2}
    if len(groups) < min_points:
        return []
    if compute is None:
        lo_hi = sorted((math.log(6 * n) + g[0].min(), math.log(6 * n) + g[0].max()) for n, g in groups.items())
        grid = np.linspace(min(lo for lo, _ in lo_hi), max(hi for _, hi in lo_hi), 200)
        reach = np.array([sum(lo - 1e-9 <= c <= hi + 1e-9 for lo, hi in lo_hi) for c in grid])
        ok = grid[reach >= min_points]
        if ok.size == 0:
            return []
        compute = np.exp(np.linspace(ok.min(), ok.max(), levels)) if ok.max() > ok.min() else np.exp(ok[:1])
    out = []
    for C in np.atleast_1d(compute):
        pts = []
        for n, (logD_runs, logL_runs) in groups.items():
            value = _interpolate(logD_runs, logL_runs, math.log(C / (6 * n)))
            if value is not None:
                pts.append((n, math.exp(value)))
        if len(pts) < min_points:
            continue
        n_pts, l_pts = np.array(pts).T
        x = np.log(n_pts)
        coeffs = np.polyfit(x, l_pts, 2)
        N_opt = loss_opt = None
        if coeffs[0] > 0:
            vertex = -coeffs[1] / (2 * coeffs[0])
            if x.min() <= vertex <= x.max():
                N_opt, loss_opt = math.exp(vertex), float(np.polyval(coeffs, vertex))
        out.append(Profile(float(C), n_pts, l_pts, coeffs, N_opt, loss_opt))
    return out


def edges(found: list[Profile]) -> dict:
    """{"smallest": k, "largest": k, "inside": k}: where the lowest measured point of each profile lies. A grid
    whose profiles all bottom out at their smallest size has its compute-optimal N below the grid."""
    out = {"smallest": 0, "largest": 0, "inside": 0}
    for p in found:
        i = int(np.argmin(p.loss))
        order = np.argsort(p.N)
        out["smallest" if i == order[0] else "largest" if i == order[-1] else "inside"] += 1
    return out


def fit_exponents(found: list[Profile]) -> dict | None:
    """{"a", "b", "points"}: slopes of log N_opt and log D_opt (D_opt = C / 6 N_opt) against log C over the
    profiles with a minimum; None when fewer than two have one (or they share one budget)."""
    pts = [(p.C, p.N_opt) for p in found if p.N_opt is not None]
    if len(pts) < 2:
        return None
    C, N_opt = np.array(pts).T
    if np.ptp(np.log(C)) == 0:
        return None
    a = float(np.polyfit(np.log(C), np.log(N_opt), 1)[0])
    b = float(np.polyfit(np.log(C), np.log(C / (6 * N_opt)), 1)[0])
    return dict(a=a, b=b, points=len(pts))


def bootstrap_isoflop(N, D, L, law, n: int = 200, seed: int = 0, levels: int = 8, min_points: int = 3) -> dict:
    """{"a": (k,), "b": (k,)} refits of approach 2 under the residual bootstrap (module docstring), over the k <= n
    resamples that gave at least two minima."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    fitted = np.log(law.loss(N, D))
    residuals = np.log(L) - fitted
    rng = np.random.default_rng(seed)
    a, b = [], []
    for _ in range(n):
        L_star = np.exp(fitted + rng.choice(residuals, size=residuals.size, replace=True))
        out = fit_exponents(profiles(N, D, L_star, levels, min_points))
        if out is not None:
            a.append(out["a"])
            b.append(out["b"])
    return dict(a=np.array(a), b=np.array(b))
