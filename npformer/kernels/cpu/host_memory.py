"""Host memory reuse for the NumPy backend on Linux: freed activation blocks stay in the process.

CPU machinery of the fast tier: nothing here changes a result, only how fast the process gets its memory.
"""

from __future__ import annotations

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's <malloc.h>
_kept_host_memory = False


def keep_host_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates and frees the same few-megabyte activations every step. By default glibc returns
    such blocks to the kernel (mmap/munmap, heap trimming), so every step faults fresh zero pages in again: at the
    baby GPT config that was ~15,000 page faults per step, 15-20% of the step's CPU time. After this call blocks
    up to 32 MiB come from the heap and the heap is never trimmed: the process's resident memory stays at its
    peak (like PyTorch's GPU caching allocator), and steady-state steps fault nothing.

    Process-wide and irreversible, so it is opt-in (the training scripts and benchmarks call it). Returns True
    when applied (glibc found), False elsewhere (macOS, musl, Windows), where it does nothing. CuPy has its own
    memory pool and needs nothing.
    """
    global _kept_host_memory
    if _kept_host_memory:
        return True
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1  # 32 MiB: glibc's largest allowed value
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    except (OSError, AttributeError):
        return False
    _kept_host_memory = ok
    return ok
