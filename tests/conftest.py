"""Shared test setup: hypothesis profiles and their seed, a fixture that runs a test on every available backend,
and an autouse fixture that restores the backend, float dtype and kernel tier after every test.

Profiles (choose with HYPOTHESIS_PROFILE, default "dev"):
    ci       few examples per property, for the 2-core CI machine
    dev      the thorough local default
    intense  for a long run before a release

Every run draws its examples from one seed, printed in the report header and again at the end of the run:
``hypothesis seed: N (rerun with --hypothesis-seed=N)``. A run without --hypothesis-seed takes
$NPFORMER_TEST_SEED when it is set, else a fresh random seed, so each CI run tries new examples and any of them
can be replayed exactly.
"""

import importlib.util
import os
import random
import sys

import pytest
from hypothesis import HealthCheck, settings

# -- the CuPy stand-in: installed before npformer is imported (NPFORMER_BACKEND=cupy is read at import) -----------
STAND_IN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_stand_in")
STAND_IN_ENV = "NPFORMER_CUPY_STAND_IN"  # "auto" (default): when no GPU is visible; "1": always; "0": never


def _gpu_visible() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: as good as no GPU
        return False


def _install_stand_in() -> bool:
    mode = os.environ.get(STAND_IN_ENV, "auto")
    if mode == "0" or (mode != "1" and _gpu_visible()):
        return False
    for name in [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx")]:
        del sys.modules[name]  # a real CuPy imported by the probe above gives way
    sys.path.insert(0, STAND_IN_DIR)
    return True


STAND_IN = _install_stand_in()

from npformer import backend, kernels  # noqa: E402

# function_scoped_fixture: xp_backend only selects the backend, which is the same for every drawn example
_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])
# ci: randomized (the seed below), and no example database, so that the seed alone decides what runs
settings.register_profile("ci", max_examples=12, derandomize=False, database=None, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("intense", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SEED_ENV = "NPFORMER_TEST_SEED"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Fix hypothesis' seed for the run (before hypothesis' own plugin reads the option): --hypothesis-seed if
    given, else $NPFORMER_TEST_SEED, else a fresh random one."""
    seed = config.getoption("hypothesis_seed", default=None)
    if seed is None:
        seed = os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32)
        config.option.hypothesis_seed = str(seed)
    config._npformer_hypothesis_seed = config.option.hypothesis_seed


def _seed_line(config):
    seed = getattr(config, "_npformer_hypothesis_seed", None)
    return None if seed is None else f"hypothesis seed: {seed} (rerun with --hypothesis-seed={seed})"


def pytest_report_header(config):
    cupy = "the stand-in (tests/cupy_stand_in)" if STAND_IN else "real" if "cupy" in backend.available_backends() \
        else "none"
    return [_seed_line(config), f"cupy: {cupy}; default backend: {backend.get_backend()}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Again at the end (the header is hidden under -q)."""
    line = _seed_line(config)
    if line:
        terminalreporter.write_line(line)


@pytest.fixture(params=backend.available_backends(),
                ids=lambda name: "cupy-stand-in" if name == "cupy" and STAND_IN else name)
def xp_backend(request):
    """Run the test once per available backend: numpy always, and cupy (the real one on a GPU, else the strict
    stand-in of tests/cupy_stand_in). Yields the module."""
    with backend.use_backend(request.param) as mod:
        yield mod


@pytest.fixture(autouse=True)
def _restore_backend_state():
    """No test leaks a backend, dtype or kernel tier change into the next one."""
    name, dtype, tier = backend.get_backend(), backend.float_dtype(), kernels.get_kernels()
    yield
    backend.set_backend(name)
    backend.set_float_dtype(dtype)
    kernels.set_kernels(tier)
