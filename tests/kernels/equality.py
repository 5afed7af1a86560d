"""How the fast tier is compared with the reference: one tolerance table, normwise, and dtypes that must match."""

import numpy as np

from npformer import backend

# (rtol, atol) fast against reference, where atol is relative to the largest |value| of the array (normwise): the
# same maths in another order (blockwise, row means as BLAS products) differs by a few ulps of the largest
# intermediate.
EQUAL_TOL = {np.dtype(np.float64): (1e-12, 1e-12), np.dtype(np.float32): (1e-5, 2e-5)}


def assert_equal(name, fast, ref, dtype):
    rtol, atol = EQUAL_TOL[np.dtype(dtype)]
    fast, ref = backend.to_numpy(fast), backend.to_numpy(ref)
    assert fast.dtype == ref.dtype == dtype, f"{name}: {fast.dtype} vs {ref.dtype}"
    assert fast.shape == ref.shape, f"{name}: {fast.shape} vs {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(fast, ref, rtol=rtol, atol=atol * scale, err_msg=name)
