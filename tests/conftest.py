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

import os
import random

import pytest
from hypothesis import HealthCheck, settings

from npformer import backend, kernels

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
    return _seed_line(config)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Again at the end (the header is hidden under -q)."""
    line = _seed_line(config)
    if line:
        terminalreporter.write_line(line)


@pytest.fixture(params=backend.available_backends())
def xp_backend(request):
    """Run the test once per available backend (numpy always, cupy when a GPU is visible); yields the module."""
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
