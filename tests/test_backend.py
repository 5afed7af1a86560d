"""The array layer: switching, errors, scatter-add, dtype control, seeded reproducibility."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npformer
from npformer import backend

REAL_CUPY = backend.cupy_available() and not getattr(sys.modules.get("cupy"), "STAND_IN", False)


def test_default_backend_is_numpy_unless_the_environment_says_otherwise():
    expected = os.environ.get("NPFORMER_BACKEND", "numpy")
    assert backend.get_backend() == expected
    assert (backend.xp() is np) == (expected == "numpy")


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(backend.BackendError, match=r"unknown backend 'torch'.*numpy, cupy"):
        npformer.set_backend("torch")


def _clean_env(**extra):
    """The environment of a fresh interpreter without the test suite's CuPy stand-in on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("NPFORMER_BACKEND", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if "cupy_stand_in" not in p)
    env.update(extra)
    return env


@pytest.mark.skipif(REAL_CUPY, reason="this machine has a working CuPy")
def test_cupy_without_gpu_or_cupy_fails_clearly():
    code = ("import npformer\ntry:\n    npformer.set_backend('cupy')\nexcept npformer.BackendError as e:\n"
            "    print('refused:', e)\nprint(npformer.get_backend())")
    proc = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True,
                          check=True)
    assert "refused: backend 'cupy'" in proc.stdout and ("not installed" in proc.stdout or "no GPU" in proc.stdout)
    assert proc.stdout.strip().endswith("numpy")  # a failed switch leaves the old backend in place


@pytest.mark.skipif(REAL_CUPY, reason="this machine has a working CuPy")
def test_env_variable_cupy_fails_clearly_at_import():
    env = _clean_env(NPFORMER_BACKEND="cupy")
    proc = subprocess.run([sys.executable, "-c", "import npformer"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "BackendError" in proc.stderr and "npformer[cuda12]" in proc.stderr


def test_env_variable_selects_numpy_and_import_is_quiet():
    env = dict(os.environ, NPFORMER_BACKEND="numpy")
    code = "import sys, npformer; print(npformer.get_backend(), 'cupy' in sys.modules, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout == "numpy False False\n" and proc.stderr == ""


def test_switch_at_run_time_affects_new_arrays(xp_backend):
    a = backend.asarray([1.0, 2.0])
    assert backend.array_module(a) is xp_backend
    assert isinstance(backend.to_numpy(a), np.ndarray)
    with backend.use_backend("numpy"):
        b = backend.asarray([1.0])
        assert backend.array_module(b) is np
    assert backend.xp() is xp_backend


def test_array_module_of_plain_numpy_and_scalars():
    assert backend.array_module(np.zeros(3)) is np
    assert backend.array_module(1.0, [1, 2]) is np


@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 4), st.integers(0, 10_000))
def test_scatter_add_sums_repeated_indices(V, N, C, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=N)
    idx[: N // 2] = idx[0]  # force repeats
    vals = rng.standard_normal((N, C))
    expected = np.zeros((V, C))
    for i, row in zip(idx, vals):  # the plain loop: obviously right
        expected[i] += row
    target = backend.asarray(np.zeros((V, C)))
    backend.scatter_add(target, backend.asarray(idx), backend.asarray(vals))
    np.testing.assert_allclose(backend.to_numpy(target), expected, rtol=1e-12, atol=1e-12)


def test_scatter_add_multidim_indices_and_1d_target():
    target = np.zeros(4)
    backend.scatter_add(target, np.array([[0, 0], [3, 0]]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(target, [7.0, 0.0, 0.0, 3.0])


def test_float_dtype_control():
    assert backend.float_dtype() == np.float32
    with backend.float64():
        assert backend.float_dtype() == np.float64
        assert backend.rng(0).normal((2,)).dtype == np.float64
    assert backend.float_dtype() == np.float32
    assert backend.rng(0).normal((2,)).dtype == np.float32
    assert backend.rng(0).random((2,)).dtype == np.float32
    with pytest.raises(ValueError, match="float dtype"):
        backend.set_float_dtype("int32")


def test_seeded_generator_reproducible(xp_backend):
    a = backend.to_numpy(backend.rng(123).normal((5,)))
    b = backend.to_numpy(backend.rng(123).normal((5,)))
    c = backend.to_numpy(backend.rng(124).normal((5,)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ints = backend.to_numpy(backend.rng(1).integers(0, 7, (100,)))
    assert ints.min() >= 0 and ints.max() < 7


def test_generator_state_roundtrip(xp_backend):
    """On either backend the state is plain data (JSON round trip included) that replays the same draws."""
    import json

    g = backend.rng(5)
    g.random((7,))
    state = json.loads(json.dumps(g.get_state()))
    first = backend.to_numpy(g.random((3,)))
    g2 = backend.rng(123)
    g2.set_state(state)
    np.testing.assert_array_equal(first, backend.to_numpy(g2.random((3,))))
    assert not np.array_equal(first, backend.to_numpy(backend.rng(6).random((3,))))


def test_to_float_and_asarray_dtype():
    assert backend.to_float(np.array([2.5])) == 2.5
    assert backend.asarray([1, 2], dtype=np.float32).dtype == np.float32
