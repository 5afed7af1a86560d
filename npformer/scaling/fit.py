"""Chinchilla's approach 3 in NumPy: fit L(N, D) = E + A / N^alpha + B / D^beta to measured runs.

Hoffmann et al. (2022), appendix D.2: minimise, over theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b),
E = exp(e),

    sum_i  Huber_delta( LSE(a - alpha log N_i,  b - beta log D_i,  e)  -  log L_i ),     delta = 1e-3,

where LSE is log-sum-exp (so the model's log loss is fitted to the measured log loss), from a grid of starting
points, keeping the best. Here every start is optimised at once, vectorised over starts: a Levenberg-Marquardt
iteration on the iteratively reweighted least-squares form of the Huber loss (with weights w_i = min(1,
delta / |r0_i|) at the current residuals r0, the surrogate Huber(r0_i) + w_i (r_i^2 - r0_i^2) / 2 touches the Huber
loss at r0 and lies above it elsewhere; it differs from sum w_i r_i^2 / 2 by a constant, so a step that lowers the
weighted sum lowers the Huber loss; a step is kept only if the Huber loss itself went down). SciPy is not needed; with
``method="scipy"`` the best NumPy optima are polished by scipy.optimize's L-BFGS-B as a cross-check.

The Jacobian of the model's log loss p_i = LSE(u_A, u_B, u_E) is the softmax s = softmax(u):
dp/da = s_A, dp/dalpha = -s_A log N, dp/db = s_B, dp/dbeta = -s_B log D, dp/de = s_E.

Bootstrap (``bootstrap``): the runs are resampled with replacement and refitted from the best optimum and a few
other starts, ``n`` times; each quantity's 95% interval is the 2.5th to 97.5th percentile of its refits.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

HUBER_DELTA = 1e-3
PARAMS = ("a", "b", "e", "alpha", "beta")
# Chinchilla's grid of initialisations: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1}, a, b in {0, 5, ..,
# 25}: 4,500 starts
START_GRID = dict(a=np.arange(0, 30, 5.0), b=np.arange(0, 30, 5.0), e=np.arange(-1, 1.5, 0.5),
                  alpha=np.arange(0, 2.5, 0.5), beta=np.arange(0, 2.5, 0.5))


def huber(r, delta: float = HUBER_DELTA):
    """Huber loss of residuals r (any shape): r^2 / 2 within delta, delta (|r| - delta / 2) beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def predict_log(theta, logN, logD):
    """theta: (S, 5) = (a, b, e, alpha, beta) per start; logN, logD: (n,). -> (S, n) model log losses and the
    (S, 5, n) Jacobian d log L / d theta (laid out parameter-major: the fits' products then run over n)."""
    theta = np.atleast_2d(theta)
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    uA, uB = a - alpha * logN, b - beta * logD  # (S, n) each; the third term, e, is (S, 1)
    m = np.maximum(np.maximum(uA, uB), e)  # a stable log-sum-exp
    wA, wB, wE = np.exp(uA - m), np.exp(uB - m), np.exp(e - m)
    total = wA + wB + wE
    p = m + np.log(total)
    sA, sB, sE = wA / total, wB / total, wE / total  # the softmax
    J = np.stack([sA, sB, sE, -sA * logN, -sB * logD], axis=1)
    return p, J


def objective(theta, logN, logD, logL, delta: float = HUBER_DELTA, weights=None):
    """Summed Huber loss of the log residuals, per start: (S,)."""
    p, _ = predict_log(theta, logN, logD)
    h = huber(p - logL, delta)
    return (h * weights).sum(axis=-1) if weights is not None else h.sum(axis=-1)


def minimise(starts, logN, logD, logL, delta: float = HUBER_DELTA, iters: int = 400, weights=None,
             keep: int = 64, prune_after: int = 10):
    """Levenberg-Marquardt on the reweighted least squares, every start at once. starts: (S, 5).
    weights: (n,) non-negative multiplicities of the runs (a bootstrap sample). After ``prune_after`` iterations
    only the ``keep`` best starts go on (the rest are left where they are). Returns (theta (S, 5),
    objective (S,))."""
    theta = np.array(starts, dtype=np.float64, copy=True)
    mult = np.ones_like(logN) if weights is None else np.asarray(weights, dtype=np.float64)
    obj = np.full(theta.shape[0], np.inf)
    live = np.arange(theta.shape[0])
    t = theta
    lam = np.full(t.shape[0], 1e-2)
    p, J = predict_log(t, logN, logD)
    r = p - logL
    o = (huber(r, delta) * mult).sum(axis=-1)
    eye = np.eye(5)
    for it in range(iters):
        if it == prune_after and t.shape[0] > keep:
            best = np.argsort(np.where(np.isfinite(o), o, np.inf))[:keep]
            theta[live], obj[live] = t, o
            live, t, lam, p, J, r, o = live[best], t[best], lam[best], p[best], J[best], r[best], o[best]
        w = mult * np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), delta))  # (S, n)
        Jw = J * w[:, None, :]  # (S, 5, n)
        g = np.matmul(Jw, r[..., None])[..., 0]  # (S, 5)
        H = np.matmul(Jw, J.transpose(0, 2, 1))  # (S, 5, 5)
        A = H + lam[:, None, None] * (H * eye) + 1e-10 * eye
        try:
            step = -np.linalg.solve(A, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -g / (np.einsum("skk->sk", H) * (1 + lam[:, None]) + 1e-9)
        new = t + step
        p_new, J_new = predict_log(new, logN, logD)
        r_new = p_new - logL
        o_new = (huber(r_new, delta) * mult).sum(axis=-1)
        better = np.isfinite(o_new) & (o_new < o * (1 - 1e-10))  # a gain in the last digits is no progress
        t = np.where(better[:, None], new, t)
        p = np.where(better[:, None], p_new, p)
        J = np.where(better[:, None, None], J_new, J)
        r = p - logL
        o = np.where(better, o_new, o)
        lam = np.clip(np.where(better, lam / 3, lam * 4), 1e-12, 1e12)
        if it > prune_after and np.all(lam >= 1e10):  # every start has stopped finding a lower objective
            break
    theta[live], obj[live] = t, o
    return theta, obj


def _start_grid() -> np.ndarray:
    return np.array(list(itertools.product(*(START_GRID[k] for k in PARAMS))), dtype=np.float64)


@dataclass
class LawFit:
    """L(N, D) = E + A / N^alpha + B / D^beta, with its objective and the data it was fitted to."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_runs: int
    theta: np.ndarray = field(repr=False)

    def loss(self, N, D):
        N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def a(self) -> float:
        """Compute-optimal N_opt ~ C^a under C = 6 N D: a = beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt ~ C^b: b = alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def optimal_N(self, C):
        """N minimising L(N, C / 6N) (Hoffmann et al., eq. 4): G (C / 6)^a, G = (alpha A / (beta B))^(1/(alpha +
        beta))."""
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return G * (np.asarray(C, dtype=np.float64) / 6.0) ** self.a

    def frontier(self, C, N_range=None):
        """The lowest loss the law gives for compute C = 6ND: at N = optimal_N(C), or, with ``N_range`` (lo, hi),
        the best N within it (so a frontier drawn over a grid does not use sizes the grid never trained)."""
        C = np.asarray(C, dtype=np.float64)
        N = self.optimal_N(C)
        if N_range is not None:
            N = np.clip(N, *N_range)  # the law is convex in log N along C = 6ND: the clipped optimum is the best
        return self.loss(N, C / (6.0 * N))

    def as_dict(self) -> dict:
        return dict(E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta, a=self.a, b=self.b,
                    objective=self.objective, n_runs=self.n_runs)


def _check_runs(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = []
    for name, v in (("N", N), ("D", D), ("L", L)):
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(f"fit: {name} must be 1-D, got shape {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"fit: {name} must be positive and finite")
        arrays.append(a)
    if not arrays[0].size == arrays[1].size == arrays[2].size:
        raise ValueError(f"fit: N, D and L must have one value per run, got {arrays[0].size}, {arrays[1].size}, "
                         f"{arrays[2].size}")
    if arrays[0].size < 5:
        raise ValueError(f"fit: the law has 5 parameters, so it needs at least 5 runs, got {arrays[0].size}")
    if np.unique(arrays[0]).size < 2 or np.unique(arrays[1]).size < 2:
        raise ValueError("fit: the runs must span at least two model sizes and two token budgets")
    return tuple(arrays)


def _law(theta: np.ndarray, obj: float, n: int) -> LawFit:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return LawFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta, objective=float(obj),
                  n_runs=n, theta=np.array(theta, dtype=np.float64))


def fit_law(N, D, L, delta: float = HUBER_DELTA, starts=None, method: str = "numpy", iters: int = 400) -> LawFit:
    """Approach 3: the best of the optima reached from ``starts`` ((S, 5) thetas; default Chinchilla's 4,500-point
    grid). N, D, L: (n,) positive. method "numpy" (needs nothing else) or "scipy" (polish with L-BFGS-B)."""
    if method not in ("numpy", "scipy"):
        raise ValueError(f"fit: method must be 'numpy' or 'scipy', got {method!r}")
    N, D, L = _check_runs(N, D, L)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    starts = _start_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=np.float64))
    theta, obj = minimise(starts, logN, logD, logL, delta, iters)
    order = np.argsort(np.where(np.isfinite(obj), obj, np.inf))
    best = order[0]
    if method == "scipy":
        theta, obj = _polish_scipy(theta[order[:10]], logN, logD, logL, delta)
        best = int(np.argmin(obj))
    if not np.isfinite(obj[best]):
        raise ValueError("fit: no starting point reached a finite objective")
    return _law(theta[best], obj[best], N.size)


def _polish_scipy(thetas, logN, logD, logL, delta):
    from scipy.optimize import minimize

    def f(t):
        p, J = predict_log(t[None], logN, logD)
        r = (p - logL)[0]
        psi = np.clip(r, -delta, delta)  # the Huber loss's derivative
        return float(huber(r, delta).sum()), J[0] @ psi

    out = [minimize(f, t, jac=True, method="L-BFGS-B") for t in thetas]
    return np.array([o.x for o in out]), np.array([o.fun for o in out])


def bootstrap(N, D, L, fit: LawFit, n: int = 200, seed: int = 0, delta: float = HUBER_DELTA,
              extra_starts: int = 24) -> dict[str, np.ndarray]:
    """{quantity: (n,) refits} for alpha, beta, E, A, B, a, b over ``n`` resamples of the runs (with replacement).
    Each refit starts from ``fit``'s optimum and ``extra_starts`` grid points (drawn once), all at once."""
    N, D, L = _check_runs(N, D, L)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    rng = np.random.default_rng(seed)
    grid = _start_grid()
    starts = np.vstack([fit.theta[None], grid[rng.choice(len(grid), size=extra_starts, replace=False)]])
    out = {k: [] for k in ("alpha", "beta", "E", "A", "B", "a", "b")}
    for _ in range(n):
        counts = np.bincount(rng.integers(0, N.size, N.size), minlength=N.size).astype(np.float64)
        theta, obj = minimise(starts, logN, logD, logL, delta, iters=200, weights=counts)
        law = _law(theta[int(np.nanargmin(np.where(np.isfinite(obj), obj, np.nan)))], 0.0, N.size)
        for k in out:
            out[k].append(getattr(law, k))
    return {k: np.array(v) for k, v in out.items()}


def interval(samples, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of finite samples."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    lo = (1 - level) / 2 * 100
    return float(np.percentile(s, lo)), float(np.percentile(s, 100 - lo))


def power_law(x, y) -> tuple[float, float]:
    """Least squares of log y = c - k log x: (k, exp(c)); Kaplan's form L = (x_c / x)^k has x_c = exp(c / k)."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(-slope), float(np.exp(intercept))
