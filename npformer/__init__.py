"""npformer: Transformers whose every gradient is written by hand, on NumPy (CPU) or CuPy (GPU).

    import npformer
    npformer.set_backend("numpy")          # or "cupy", or NPFORMER_BACKEND=cupy
    from npformer import functional as F   # forward/backward pairs: F.layernorm_forward, F.layernorm_backward, ...

Importing npformer imports NumPy and nothing else optional; CuPy is imported only when asked for.
"""

from . import backend, functional, gradcheck, models, nn
from .backend import BackendError, get_backend, set_backend, to_numpy, xp

__version__ = "0.1.0"

__all__ = ["BackendError", "backend", "functional", "get_backend", "gradcheck", "models", "nn", "set_backend",
           "to_numpy", "xp", "__version__"]
