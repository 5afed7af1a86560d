"""CPU machinery of the fast tier: the blockwise thread pool, host memory reuse, and BLAS thread control.

Nothing here changes what is computed, only how the host's cores and memory are used.
"""

from .blas import blas_libraries, blas_threads, get_blas_threads, set_blas_threads
from .host_memory import keep_host_memory
from .threads import blockwise, num_threads, single_threaded, usable_cpus

__all__ = ["blas_libraries", "blas_threads", "blockwise", "get_blas_threads", "keep_host_memory", "num_threads",
           "set_blas_threads", "single_threaded", "usable_cpus"]
