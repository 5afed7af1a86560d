"""Data parallelism splits a batch over the host's cores: every test here runs on the NumPy backend, whatever
NPFORMER_BACKEND says (the runners refuse a GPU backend, and test_threads.py checks that they do)."""

import os

import pytest

from npformer import backend
from npformer.kernels.cpu import get_blas_threads, set_blas_threads


@pytest.fixture(autouse=True)
def _numpy_backend():
    with backend.use_backend("numpy"):
        yield


@pytest.fixture(autouse=True)
def _keep_thread_settings():
    """An MPI runner built in this process shares the machine's cores out: it sets NPFORMER_NUM_THREADS and the
    BLAS thread count, as a rank should. Here they are put back after each test, so no later test inherits them.
    (Not monkeypatch.delenv: it records nothing for a variable that is absent, so a later setting would stay.)"""
    name = "NPFORMER_NUM_THREADS"
    threads, blas = os.environ.get(name), get_blas_threads()
    yield
    if threads is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = threads
    if blas is not None and get_blas_threads() != blas:
        set_blas_threads(blas)
