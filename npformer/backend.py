"""The array layer: the one place that knows whether arrays live in NumPy (CPU) or CuPy (GPU).

Everything else in npformer asks this module for its array module (``xp()``) or asks an array which module
owns it (``array_module(x)``), so one piece of code runs on both. Transfers between host and device happen
only through the named boundary functions ``asarray`` (host -> active backend), ``to_backend_of`` (to where
another array lives: how a device model takes host ids) and ``to_numpy`` / ``to_float`` (any backend -> host, a
device sync).

Choosing a backend:
    npformer.set_backend("cupy")            # at run time; affects everything created afterwards
    NPFORMER_BACKEND=cupy python train.py    # from the environment, read at import

Precision: arrays npformer creates (parameters, masks, zeros) use ``float_dtype()``, float32 unless changed by
``set_float_dtype("float64")`` or, for a block of code, ``with float64(): ...`` (what gradient checks use).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy")
FLOAT_DTYPES = ("float32", "float64")


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here (unknown name, CuPy missing, no GPU)."""


class _State:
    name: str = "numpy"
    module: Any = np
    float_dtype: Any = np.dtype(np.float32)


_state = _State()


# ---------------------------------------------------------------------------------------------------------------
# choosing the backend
# ---------------------------------------------------------------------------------------------------------------
def _load_cupy():
    """Import CuPy and check that a GPU is visible; raise BackendError saying which of the two is missing."""
    if importlib.util.find_spec("cupy") is None:
        raise BackendError(
            "backend 'cupy' was asked for, but CuPy is not installed. Install the extra that matches your CUDA "
            "toolkit: pip install 'npformer[cuda12]' (CUDA 12.x) or pip install 'npformer[cuda13]' (CUDA 13.x); "
            "or use the 'numpy' backend."
        )
    try:
        import cupy
    except Exception as exc:  # a broken CUDA install shows up here
        raise BackendError(f"backend 'cupy': CuPy is installed but failed to import: {exc}") from exc
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendError(
            f"backend 'cupy': CuPy is installed but no GPU is visible (CUDA said: {exc}). "
            "Use the 'numpy' backend on this machine."
        ) from exc
    if n_gpus < 1:
        raise BackendError("backend 'cupy': CuPy is installed but no GPU is visible. Use the 'numpy' backend.")
    return cupy


def set_backend(name: str) -> None:
    """Make ``name`` ("numpy" or "cupy") the backend for every array created from now on.

    Arrays made before the switch stay where they are; move them with ``asarray`` / ``to_numpy``.
    """
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; valid backends are: {', '.join(BACKENDS)}")
    name = name.lower()
    module = np if name == "numpy" else _load_cupy()
    _state.name, _state.module = name, module


def get_backend() -> str:
    """Name of the active backend: "numpy" or "cupy"."""
    return _state.name


def xp():
    """The active array module (``numpy`` or ``cupy``)."""
    return _state.module


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU (never raises)."""
    try:
        _load_cupy()
    except BackendError:
        return False
    return True


def available_backends() -> list[str]:
    """Backends usable on this machine: always "numpy", plus "cupy" when a GPU is visible to CuPy."""
    return ["numpy", "cupy"] if cupy_available() else ["numpy"]


@contextlib.contextmanager
def use_backend(name: str):
    """Run a block on backend ``name`` and restore the previous backend afterwards."""
    previous = _state.name
    set_backend(name)
    try:
        yield _state.module
    finally:
        set_backend(previous)


def array_module(*arrays):
    """The module owning the given arrays: cupy if any is a CuPy array, else numpy (chainer's get_array_module)."""
    cupy = sys.modules.get("cupy")  # only look if someone already imported it: never import it here
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return np


# ---------------------------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------------------------
def float_dtype():
    """The float dtype npformer creates arrays in (float32 by default)."""
    return _state.float_dtype


def set_float_dtype(dtype) -> None:
    """Set the float dtype for arrays created from now on: "float32" (training) or "float64" (checks)."""
    dt = np.dtype(dtype)
    if dt.name not in FLOAT_DTYPES:
        raise ValueError(f"float dtype must be one of {FLOAT_DTYPES}, got {dt.name}")
    _state.float_dtype = dt


@contextlib.contextmanager
def float64():
    """Create arrays in float64 inside the block (gradient checks), then restore the previous dtype."""
    previous = _state.float_dtype
    set_float_dtype("float64")
    try:
        yield
    finally:
        _state.float_dtype = previous


# ---------------------------------------------------------------------------------------------------------------
# host <-> device boundary
# ---------------------------------------------------------------------------------------------------------------
def asarray(a, dtype=None):
    """Host -> active backend. Accepts NumPy arrays, lists, scalars and arrays of either backend."""
    mod = _state.module
    if mod is np:
        src = array_module(a)
        if src is not np:  # a CuPy array coming home
            a = src.asnumpy(a)
        return np.asarray(a, dtype=dtype)
    return mod.asarray(a, dtype=dtype)


def to_numpy(a) -> np.ndarray:
    """Any backend -> a NumPy array on the host (a no-op for NumPy arrays)."""
    mod = array_module(a)
    if mod is np:
        return np.asarray(a)
    return mod.asnumpy(a)


def to_backend_of(a, like):
    """``a`` moved to the backend that owns ``like`` (a host upload or a device download); unchanged when it is
    already there. The boundary public functions use to accept host ids, targets and masks for a device model."""
    target = array_module(like)
    if array_module(a) is target:
        return a
    if target is np:
        return to_numpy(a)
    return target.asarray(a)


def on_host(a) -> bool:
    """True for a NumPy array (or anything that is not a device array): checks on it cost no device sync."""
    return array_module(a) is np


def to_float(a) -> float:
    """A 0-d / size-1 array (of either backend) as a Python float: a device sync, so keep it out of hot loops."""
    return float(to_numpy(a).reshape(()))


# ---------------------------------------------------------------------------------------------------------------
# operations spelled differently on NumPy and CuPy
# ---------------------------------------------------------------------------------------------------------------
def scatter_add(target, indices, values) -> None:
    """In place: ``target[indices[i]] += values[i]`` for every i, summing repeated indices.

    target: (V, ...) float array; indices: integer array (N,) or any shape (...); values: (*indices.shape, ...).
    ``target[indices] += values`` would silently keep only one of each repeated index.
    """
    mod = array_module(target)
    idx = indices.reshape(-1)
    vals = values.reshape((idx.shape[0],) + target.shape[1:])
    if mod is np:
        if target.ndim == 2 and idx.shape[0] > 0:
            # np.add.at is slow for rows; sorting by index and summing contiguous runs with add.reduceat is
            # one pass of vectorised work, and the unique rows are then disjoint, so plain += is exact.
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
            sums = np.add.reduceat(vals[order], starts, axis=0)
            target[sorted_idx[starts]] += sums
        else:
            np.add.at(target, idx, vals)
    else:
        import cupyx  # only reached when target is a CuPy array

        cupyx.scatter_add(target, idx, vals)


class Generator:
    """A seeded random stream on one backend, with the few draws npformer needs, and a state that is plain data.

    NumPy: PCG64 (``numpy.random.default_rng``). CuPy: a counter-based stream (npformer.counter_random) drawn with
    CuPy's elementwise operations: its state is two integers, so it checkpoints and replays like PCG64 does, and
    one generator serves every step (a cuRAND generator's state stays on the device and cannot be saved).
    Draws are made in the requested float dtype directly, never float64 then cast.
    """

    def __init__(self, seed: int | None = None, backend: str | None = None):
        self.backend = backend or _state.name
        self.seed = seed
        if self.backend == "numpy":
            self.xp = np
            self._gen = np.random.default_rng(seed)
        else:
            from .counter_random import CounterStream

            self.xp = _load_cupy()
            self._gen = CounterStream(self.xp, seed)

    def random(self, shape, dtype=None):
        """Uniform [0, 1) of ``shape``."""
        return self._gen.random(shape, dtype=dtype or float_dtype())

    def normal(self, shape, std=1.0, dtype=None):
        """Normal(0, std) of ``shape``."""
        out = self._gen.standard_normal(shape, dtype=dtype or float_dtype())
        if std != 1.0:
            out *= std
        return out

    def integers(self, low, high, shape):
        """Integers uniform in [low, high) as int64."""
        if self.backend == "numpy":
            return self._gen.integers(low, high, size=shape, dtype=np.int64)
        return self._gen.integers(low, high, shape)

    def get_state(self) -> dict:
        """The generator's state as JSON-able data (for checkpoints and exact resume)."""
        if self.backend == "numpy":
            return self._gen.bit_generator.state
        return self._gen.state()

    def set_state(self, state: dict) -> None:
        """Continue from a state ``get_state`` returned (on a generator of the same backend)."""
        if self.backend == "numpy":
            self._gen.bit_generator.state = state
        else:
            self._gen.set_state(state)


def rng(seed: int | None = None) -> Generator:
    """A seeded generator on the active backend: the same seed gives the same draws on that backend."""
    return Generator(seed)


def host_rng(seed: int | None = None) -> np.random.Generator:
    """A seeded NumPy generator on the host, for weight initialisation: a seed means the same model on any
    backend, because weights are drawn here and then moved with ``asarray``."""
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------------------
# the environment variable is read once, at import
# ---------------------------------------------------------------------------------------------------------------
_env = os.environ.get("NPFORMER_BACKEND")
if _env:
    set_backend(_env)
