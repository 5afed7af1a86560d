"""How many threads the BLAS behind NumPy's matrix products uses, read and set at run time.

NumPy's wheels bundle OpenBLAS, which reads OPENBLAS_NUM_THREADS once, when it is loaded; after that the only
way to change its thread count is to call its own ``openblas_set_num_threads``. This module finds the BLAS
libraries loaded in this process (on Linux, from /proc/self/maps) and calls their thread-count functions through
ctypes, the way threadpoolctl does, so that npformer needs nothing beyond NumPy. Where no controllable BLAS is
found (another OS, an unknown BLAS) every function here is a harmless no-op: ``get_blas_threads()`` is then None.

Why npformer needs it: ``npformer.parallel.DataParallel`` runs one model replica per core, and each replica's
products must then use one BLAS thread; two replicas each asking a two-thread BLAS for both cores would
oversubscribe the machine.

    from npformer.kernels.cpu import blas_threads
    with blas_threads(1):
        ...  # products in here run single-threaded; the previous count is restored on the way out
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

# (library file name contains, setter names, getter names): OpenBLAS as built by itself, with 64-bit integers
# (suffix 64_), and as bundled in NumPy/SciPy wheels (prefix scipy_); then Intel MKL's runtime library.
_KNOWN = (
    ("openblas",
     ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
      "scipy_openblas_set_num_threads64_"),
     ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
      "scipy_openblas_get_num_threads64_")),
    ("mkl_rt", ("MKL_Set_Num_Threads",), ("MKL_Get_Max_Threads",)),
)
_libraries: list[tuple[str, object, object]] | None = None  # (path, setter, getter), found once
_lock = threading.Lock()


def _loaded_library_paths() -> list[str]:
    """Paths of the shared libraries mapped into this process (Linux); [] where /proc is not there."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if ".so" in path and path.startswith("/") and path not in paths:
            paths.append(path)
    return paths


def _find_libraries() -> list[tuple[str, object, object]]:
    global _libraries
    if _libraries is not None:
        return _libraries
    found = []
    for path in _loaded_library_paths():
        name = os.path.basename(path).lower()
        for fragment, setters, getters in _KNOWN:
            if fragment not in name:
                continue
            try:  # RTLD_NOLOAD: a handle on the copy already loaded, never a second copy
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            except (OSError, AttributeError):
                continue
            setter = next((getattr(lib, s) for s in setters if hasattr(lib, s)), None)
            getter = next((getattr(lib, g) for g in getters if hasattr(lib, g)), None)
            if setter is not None and getter is not None:
                getter.restype = ctypes.c_int
                found.append((path, setter, getter))
    _libraries = found
    return found


def blas_libraries() -> list[str]:
    """Paths of the BLAS libraries whose thread count this module can control (empty if none)."""
    import numpy  # noqa: F401  (loads NumPy's BLAS, so that it is there to be found)

    return [path for path, _, _ in _find_libraries()]


def get_blas_threads() -> int | None:
    """Threads the (first controllable) BLAS will use for its next product; None if none can be controlled."""
    libs = _find_libraries() if blas_libraries() else []
    return int(libs[0][2]()) if libs else None


def set_blas_threads(n: int) -> bool:
    """Make every controllable BLAS use ``n`` threads from now on; True if there was one to set."""
    if int(n) < 1:
        raise ValueError(f"set_blas_threads: n must be >= 1, got {n}")
    libs = _find_libraries() if blas_libraries() else []
    for _, setter, _ in libs:
        setter(ctypes.c_int(int(n)))
    return bool(libs)


@contextlib.contextmanager
def blas_threads(n: int):
    """Within the block, BLAS products use ``n`` threads; the previous count comes back afterwards.

    The setting is process-wide (BLAS has one thread pool), so nest these only from one thread at a time."""
    with _lock:
        previous = get_blas_threads()
        set_blas_threads(n)
    try:
        yield previous is not None
    finally:
        if previous is not None:
            with _lock:
                set_blas_threads(previous)
