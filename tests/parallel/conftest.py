"""Data parallelism splits a batch over the host's cores: every test here runs on the NumPy backend, whatever
NPFORMER_BACKEND says (the runners refuse a GPU backend, and test_threads.py checks that they do)."""

import pytest

from npformer import backend


@pytest.fixture(autouse=True)
def _numpy_backend():
    with backend.use_backend("numpy"):
        yield
