"""The CuPy stand-in enforces CuPy's rules (so the suite fails here where a GPU would), and models every CuPy
name npformer uses: a static scan of the package checks each ``xp.NAME`` / ``cupy.NAME`` against its whitelist."""

import pathlib
import re
import sys

import numpy as np
import pytest

import npformer
from npformer import backend

pytestmark = pytest.mark.skipif(not getattr(sys.modules.get("cupy"), "STAND_IN", False),
                                reason="the CuPy stand-in is not installed (a real GPU is visible)")


@pytest.fixture
def cupy():
    with backend.use_backend("cupy") as mod:
        yield mod


def test_no_implicit_conversion_to_numpy(cupy):
    dev = cupy.asarray([1.0, 2.0])
    for convert in (np.asarray, np.array, lambda a: np.testing.assert_array_equal(a, [1.0, 2.0])):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(dev)


@pytest.mark.parametrize("host", [np.ones(2), np.array(1.0)], ids=["array", "0-d"])
def test_a_host_array_never_meets_a_device_array(cupy, host):
    dev = cupy.asarray([1.0, 2.0])
    for mix in (lambda: dev + host, lambda: host * dev, lambda: cupy.maximum(dev, host),
                lambda: cupy.where(dev > 0, host, dev), lambda: np.add(dev, host),
                lambda: cupy.concatenate([dev, host])):
        with pytest.raises(TypeError, match="numpy.ndarray"):
            mix()
    with pytest.raises(TypeError, match=r"dev\[\.\.\.\] = a NumPy array"):
        dev[...] = host
    # scalars are fine, Python's and NumPy's
    assert isinstance(dev + 1.0, cupy.ndarray) and isinstance(dev * np.float32(2.0), cupy.ndarray)


def test_reductions_and_indexing_stay_on_the_device(cupy):
    dev = cupy.asarray([[1.0, 2.0], [3.0, 4.0]])
    for value in (dev.sum(), dev.max(), cupy.sum(dev), dev[1, 1], dev.mean(axis=None)):
        assert isinstance(value, cupy.ndarray) and value.shape == ()
    picked = dev[np.array([1, 0])]  # a host index array is uploaded, as CuPy does
    assert isinstance(picked, cupy.ndarray) and picked.shape == (2, 2)


def test_every_transfer_home_is_counted(cupy):
    dev = cupy.asarray([1.5, 2.0])
    before = cupy.sync_count()
    dev.get()
    cupy.asnumpy(dev)
    float(dev[0])
    int(dev[1])
    bool(dev[0] > 0)
    dev[0].item()
    dev.tolist()
    backend.to_numpy(dev)
    backend.to_float(dev[0])
    assert cupy.sync_count() - before == 9
    cupy.asarray(np.ones(3))  # an upload is not a sync
    assert cupy.sync_count() - before == 9


def test_an_unmodelled_name_fails_loudly(cupy):
    with pytest.raises(AttributeError, match="cupy.lexsort is not modelled"):
        cupy.lexsort  # noqa: B018
    with pytest.raises(AttributeError, match="not in the whitelist"):
        np.lexsort(cupy.asarray([1, 2]))


def test_the_random_generator_and_cupyx():
    import cupy
    import cupyx
    import cupyx.scipy.special

    target = cupy.zeros((3, 2))
    cupyx.scatter_add(target, cupy.asarray([0, 0, 2]), cupy.ones((3, 2)))
    np.testing.assert_array_equal(target.get(), [[2, 2], [0, 0], [1, 1]])
    erf = cupyx.scipy.special.erf(cupy.asarray([0.0, 0.5]))
    np.testing.assert_allclose(erf.get(), [0.0, 0.5204998778130465], rtol=1e-15)
    draws = cupy.random.default_rng(0).random((4,), dtype=np.float32)
    assert isinstance(draws, cupy.ndarray) and draws.dtype == np.float32


def test_the_package_uses_only_modelled_cupy_names():
    """Every module-level name npformer reaches through an array module (``xp.NAME``, ``cupy.NAME``,
    ``mod.NAME``) is one the stand-in models, so no CuPy call can fall through to NumPy unnoticed."""
    import cupy

    allowed = cupy.FUNCTIONS | cupy.HOST_FUNCTIONS | cupy.CONSTANTS | {
        "ndarray", "asarray", "array", "asnumpy", "random", "cuda", "get_default_memory_pool", "get_array_module",
        "__name__"}
    used = set()
    for path in pathlib.Path(npformer.__file__).parent.rglob("*.py"):
        used |= set(re.findall(r"\b(?:xp|cupy|mod|self\.xp|target)\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    assert used, "the scan found nothing: the pattern is wrong"
    missing = sorted(used - allowed - {"random", "cuda"})
    assert not missing, f"npformer uses CuPy names the stand-in does not model: {missing}"
