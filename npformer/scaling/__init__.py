"""Scaling laws measured on this machine: a grid of GPTs over model size N and tokens D, run on every core with
progress and resume, then Chinchilla's fits (approach 3 with a Huber loss on log residuals from many starting
points; approach 2 from IsoFLOP profiles), bootstrap intervals, a report beside the published exponents, and a
figure. NumPy only; SciPy and matplotlib are used when asked for and installed.

    python examples/scaling.py --quick          # about 10 minutes on 2 cores; the default takes about an hour

    from npformer.scaling import LADDER, SweepData, analyse, format_report, plan_sweep, run_sweep
"""

from .fit import LawFit, bootstrap, fit_law, huber, interval
from .grid import BATCH_SIZE, BLOCK_SIZE, LADDER, MIN_STEPS, Plan, RunSpec, non_embedding_params, plan_grid
from .isoflop import Profile, bootstrap_isoflop, fit_exponents, profiles
from .plots import plot_sweep
from .records import load_results, save_results
from .report import CHINCHILLA, KAPLAN, analyse, format_report
from .runner import SweepData, full_val_loss, run_one
from .sweep import MODES, RESULTS_FILE, measure_modes, plan_sweep, run_grid, run_sweep

__all__ = ["BATCH_SIZE", "BLOCK_SIZE", "CHINCHILLA", "KAPLAN", "LADDER", "MIN_STEPS", "MODES", "RESULTS_FILE",
           "LawFit", "Plan", "Profile", "RunSpec", "SweepData", "analyse", "bootstrap", "bootstrap_isoflop",
           "fit_exponents", "fit_law", "format_report", "full_val_loss", "huber", "interval", "load_results",
           "measure_modes", "non_embedding_params", "plan_grid", "plan_sweep", "plot_sweep", "profiles",
           "run_grid", "run_one", "run_sweep", "save_results"]
