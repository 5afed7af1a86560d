"""Shared test setup: hypothesis profiles and a fixture that runs a test on every available backend.

Profiles (choose with HYPOTHESIS_PROFILE, default "dev"):
    ci       few examples per property, for the 2-core CI machine
    dev      the thorough local default
    intense  for a long run before a release
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from npformer import backend

# function_scoped_fixture: xp_backend only selects the backend, which is the same for every drawn example
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=12, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=60, print_blob=True, **_common)
settings.register_profile("intense", max_examples=500, print_blob=True, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(params=backend.available_backends())
def xp_backend(request):
    """Run the test once per available backend (numpy always, cupy when a GPU is visible); yields the module."""
    with backend.use_backend(request.param) as mod:
        yield mod


@pytest.fixture(autouse=True)
def _restore_backend_state():
    """No test leaks a backend or dtype change into the next one."""
    name, dtype = backend.get_backend(), backend.float_dtype()
    yield
    backend.set_backend(name)
    backend.set_float_dtype(dtype)
