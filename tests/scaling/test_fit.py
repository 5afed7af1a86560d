"""Chinchilla's approach 3 and approach 2 in NumPy: the Jacobian against central differences, the fit recovering a
known law from noisy synthetic runs, the IsoFLOP minima recovering its compute-optimal exponent, bootstrap
intervals, and bad input. No SciPy needed (a test hides it)."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npformer.scaling.fit import (
    LawFit,
    bootstrap,
    fit_law,
    huber,
    interval,
    minimise,
    objective,
    power_law,
    predict_log,
)
from npformer.scaling.isoflop import bootstrap_isoflop, fit_exponents, profiles
from npformer.scaling.plots import plot_sweep
from npformer.scaling.report import analyse, caveats, format_report


def synthetic_runs(alpha, beta, E, a_scale, b_scale, seed, noise, sizes=7, budgets=7):
    """A 7 x 7 grid over 3 decades of N and D, losses from L = E + A/N^alpha + B/D^beta times lognormal noise;
    A and B put each term within a factor 2 of E at the middle of the grid."""
    rng = np.random.default_rng(seed)
    N, D = np.geomspace(1e3, 1e6, sizes), np.geomspace(1e5, 1e8, budgets)
    A = E * np.sqrt(N[0] * N[-1]) ** alpha * a_scale
    B = E * np.sqrt(D[0] * D[-1]) ** beta * b_scale
    NN, DD = (x.ravel() for x in np.meshgrid(N, D))
    L = (E + A / NN ** alpha + B / DD ** beta) * np.exp(rng.normal(0.0, noise, NN.size))
    return NN, DD, L, A, B


@settings(max_examples=4, deadline=None)
@given(alpha=st.floats(0.25, 0.6), beta=st.floats(0.25, 0.6), E=st.floats(1.0, 2.0), a_scale=st.floats(0.5, 2.0),
       b_scale=st.floats(0.5, 2.0), seed=st.integers(0, 2**31))
def test_fit_recovers_a_known_law_from_noisy_runs(alpha, beta, E, a_scale, b_scale, seed):
    N, D, L, _, _ = synthetic_runs(alpha, beta, E, a_scale, b_scale, seed, noise=0.001)
    law = fit_law(N, D, L)  # the default: Chinchilla's 4,500 starting points, NumPy only
    assert law.alpha == pytest.approx(alpha, rel=0.05)
    assert law.beta == pytest.approx(beta, rel=0.05)
    assert law.E == pytest.approx(E, rel=0.02)
    assert law.a == pytest.approx(beta / (alpha + beta), rel=0.05)


def test_fit_is_robust_to_an_outlier():
    """The Huber loss on log residuals: one run 30% off moves the fit far less than least squares would."""
    N, D, L, _, _ = synthetic_runs(0.34, 0.28, 1.5, 1.0, 1.0, seed=3, noise=0.001)
    L = L.copy()
    L[10] *= 1.3
    law = fit_law(N, D, L)
    assert law.alpha == pytest.approx(0.34, rel=0.05) and law.beta == pytest.approx(0.28, rel=0.05)
    assert law.E == pytest.approx(1.5, rel=0.02)


@settings(deadline=None)
@given(theta=st.tuples(st.floats(-2, 8), st.floats(-2, 8), st.floats(-1, 1), st.floats(0, 1.5), st.floats(0, 1.5)))
def test_jacobian_matches_central_differences(theta):
    """d log L / d theta, float64, step 1e-6: agreement to 1e-7 (the model's log loss is smooth and O(10))."""
    logN, logD = np.log(np.geomspace(1e3, 1e6, 5)), np.log(np.geomspace(1e5, 1e8, 5))
    theta = np.array([theta], dtype=np.float64)
    _, J = predict_log(theta, logN, logD)
    assert J.shape == (1, 5, 5)
    for k in range(5):
        e = np.zeros(5)
        e[k] = 1e-6
        numeric = (predict_log(theta + e, logN, logD)[0] - predict_log(theta - e, logN, logD)[0]) / 2e-6
        np.testing.assert_allclose(J[:, k], numeric, atol=1e-7)


def test_log_sum_exp_is_stable_and_huber_is_its_definition():
    p, _ = predict_log(np.array([[800.0, 0.0, 0.0, 0.0, 0.0]]), np.log([10.0]), np.log([10.0]))
    assert np.isfinite(p).all() and p[0, 0] == pytest.approx(800.0)
    r = np.array([-0.01, -1e-4, 0.0, 5e-4, 0.02])
    np.testing.assert_allclose(huber(r, 1e-3), [1e-3 * (0.01 - 5e-4), 5e-9, 0.0, 1.25e-7, 1e-3 * (0.02 - 5e-4)])


def test_minimise_lowers_every_start_and_keeps_the_best():
    N, D, L, _, _ = synthetic_runs(0.4, 0.3, 1.2, 1.0, 1.0, seed=0, noise=0.001)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    starts = np.array([[0.0, 0.0, 0.0, 0.5, 0.5], [5.0, 5.0, 0.5, 1.0, 1.0], [20.0, 20.0, -1.0, 2.0, 2.0]])
    before = objective(starts, logN, logD, logL)
    theta, after = minimise(starts, logN, logD, logL)
    assert np.all(after <= before) and after.min() < 1e-3 * before.min()
    np.testing.assert_allclose(objective(theta, logN, logD, logL), after)


def test_numpy_path_needs_no_scipy(monkeypatch):
    # "import scipy" and "from scipy.optimize import ..." now fail, even after another test imported them
    # (scikit-learn does): a submodule already in sys.modules would otherwise be found there
    for name in [name for name in sys.modules if name == "scipy" or name.startswith("scipy.")] + ["scipy"]:
        monkeypatch.setitem(sys.modules, name, None)
    N, D, L, _, _ = synthetic_runs(0.34, 0.28, 1.5, 1.0, 1.0, seed=1, noise=0.001)
    assert fit_law(N, D, L).alpha == pytest.approx(0.34, rel=0.05)
    with pytest.raises(ImportError):
        fit_law(N, D, L, method="scipy")


def test_scipy_polish_agrees_with_numpy():
    pytest.importorskip("scipy")
    N, D, L, _, _ = synthetic_runs(0.34, 0.28, 1.5, 1.0, 1.0, seed=2, noise=0.002)
    a, b = fit_law(N, D, L), fit_law(N, D, L, method="scipy")
    assert b.objective <= a.objective * (1 + 1e-6)
    assert b.alpha == pytest.approx(a.alpha, rel=1e-3) and b.E == pytest.approx(a.E, rel=1e-3)


def test_bootstrap_intervals_cover_the_truth_and_have_width():
    N, D, L, _, _ = synthetic_runs(0.4, 0.3, 1.5, 1.0, 1.0, seed=4, noise=0.003)
    law = fit_law(N, D, L)
    boot = bootstrap(N, D, L, law, n=40, seed=0)
    for key, truth in (("alpha", 0.4), ("beta", 0.3), ("E", 1.5)):
        lo, hi = interval(boot[key])
        assert hi > lo and lo <= getattr(law, key) <= hi
        assert lo - 0.05 * truth <= truth <= hi + 0.05 * truth, (key, lo, hi)
    assert boot["a"].shape == (40,)


def test_isoflop_minima_recover_the_compute_optimal_exponent():
    """Noise-free runs of a law with a = beta / (alpha + beta) = 0.4: the IsoFLOP parabolas' minima follow
    N_opt ~ C^a, read off an N x D grid by interpolation; the residual bootstrap gives an interval around it."""
    alpha, beta = 0.45, 0.3
    N, D, L, _, _ = synthetic_runs(alpha, beta, 1.5, 1.0, 1.0, seed=0, noise=0.0, sizes=9, budgets=9)
    found = profiles(N, D, L)
    assert len(found) >= 4
    out = fit_exponents(found)
    assert out is not None and out["points"] >= 3
    assert out["a"] == pytest.approx(beta / (alpha + beta), abs=0.06)
    assert out["a"] + out["b"] == pytest.approx(1.0)
    noisy = synthetic_runs(alpha, beta, 1.5, 1.0, 1.0, seed=5, noise=0.002, sizes=9, budgets=9)[:3]
    boot = bootstrap_isoflop(*noisy, fit_law(*noisy), n=20)
    lo, hi = interval(boot["a"])
    assert hi > lo and lo - 0.06 <= 0.4 <= hi + 0.06


def test_analysis_report_and_figure(tmp_path):
    """The whole analysis on synthetic runs: the report names every quantity beside the published figures, and
    the figure (when matplotlib is installed) is a small PNG."""
    N, D, L, _, _ = synthetic_runs(0.34, 0.28, 1.5, 1.0, 1.0, seed=6, noise=0.002, sizes=5, budgets=5)
    runs = [dict(N=n, D=d, val_loss=v) for n, d, v in zip(N, D, L)]
    analysis = analyse(runs, n_boot=8)
    text = format_report(analysis, {"source": "synthetic", "train_tokens": 1000, "vocab_size": 65})
    for fragment in ("alpha (N exponent)", "beta (D exponent)", "a, IsoFLOP", "alpha_N, pure power law", "0.076",
                     "Chinchilla", "Why this differs", "25 runs"):
        assert fragment in text, fragment
    assert analysis["law"].alpha == pytest.approx(0.34, rel=0.1)
    pytest.importorskip("matplotlib")
    path = tmp_path / "scaling.png"
    assert plot_sweep(runs, analysis, str(path))
    assert 5_000 < path.stat().st_size < 200_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_isoflop_without_enough_sizes_finds_nothing():
    N, D, L, _, _ = synthetic_runs(0.4, 0.3, 1.5, 1.0, 1.0, seed=0, noise=0.0, sizes=2, budgets=3)
    assert profiles(N, D, L) == [] and fit_exponents([]) is None


def test_power_law_slope():
    x = np.geomspace(1e3, 1e6, 6)
    k, c = power_law(x, 5.0 * x ** -0.076)
    assert k == pytest.approx(0.076) and c == pytest.approx(5.0)


@pytest.mark.parametrize("N, D, L, fragment", [
    ([1e3, 1e4, 1e5], [1e5, 1e6, 1e7], [3.0, 2.5, 2.0], "at least 5 runs"),
    ([1e3] * 6, [1e5, 1e6] * 3, [3.0] * 6, "two model sizes"),
    ([1e3, 1e4, 1e5, 1e3, 1e4, 1e5], [1e5] * 3 + [1e6] * 3, [3.0, 2.5, 2.0, 2.9, np.nan, 1.9], "L must be positive"),
    ([1e3, 1e4, 1e5, 1e3, 1e4], [1e5] * 3 + [1e6] * 3, [3.0] * 6, "one value per run"),
    ([1e3, -1e4, 1e5, 1e3, 1e4, 1e5], [1e5] * 3 + [1e6] * 3, [3.0] * 6, "N must be positive"),
])
def test_fit_refuses_bad_runs(N, D, L, fragment):
    with pytest.raises(ValueError, match=fragment):
        fit_law(N, D, L)


def test_fit_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="method"):
        fit_law([1e3] * 5, [1e5] * 5, [3.0] * 5, method="adam")


def test_the_report_says_what_the_runs_could_not_pin_down():
    """Losses that depend on D alone: at every compute budget the smallest model reaching it (trained longest)
    wins, so approach 2 has no minimum inside the grid and the report says which way the optimum lies; an E
    driven to zero is named as not identified."""
    N, D, _, _, _ = synthetic_runs(0.3, 0.3, 1.0, 1.0, 1.0, seed=0, noise=0.0, sizes=5, budgets=5)
    L = 30.0 / D ** 0.3
    found = profiles(N, D, L)
    assert found and fit_exponents(found) is None
    law = LawFit(E=1e-30, A=1.0, B=30.0, alpha=0.01, beta=0.3, objective=0.0, n_runs=25, theta=np.zeros(5))
    notes = caveats(dict(law=law, ci={}, profiles=found, isoflop=None, min_loss=float(L.min())))
    assert any("E is not identified" in n for n in notes)
    assert any("smallest model reaching it has the lowest loss" in n and "below this grid" in n for n in notes)
