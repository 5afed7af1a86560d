"""The fast tier's CPU machinery: blockwise visits every row once on any blocking and thread count, the per-thread
cap holds, and keep_host_memory really keeps freed memory in the process."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer.kernels import cpu


@given(rows=st.integers(1, 300), width=st.integers(1, 5), block=st.integers(1, 40), threads=st.integers(1, 4))
def test_blockwise_visits_every_row_once(monkeypatch, rows, width, block, threads):
    monkeypatch.setattr(cpu.threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setenv("NPFORMER_NUM_THREADS", str(threads))
    x = np.arange(rows * width, dtype=np.float64).reshape(rows, width)
    out = np.zeros_like(x)
    seen = []

    def kernel(a, o):
        o += a + 1.0  # a row visited twice would get + 2
        seen.append(threading.get_ident())

    cpu.blockwise(kernel, x, out, block_elements=block)
    np.testing.assert_array_equal(out, x + 1.0)
    rows_per_block = max(1, block // width)
    assert len(seen) == -(-rows // rows_per_block)


def test_blockwise_shares_blocks_between_threads(monkeypatch):
    monkeypatch.setattr(cpu.threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setenv("NPFORMER_NUM_THREADS", "3")
    seen = set()
    barrier = threading.Barrier(2, timeout=5)  # the first two blocks wait for each other: two threads must run

    def kernel(a):
        seen.add(threading.get_ident())
        if len(seen) <= 2:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

    cpu.blockwise(kernel, np.zeros((64, 1)), block_elements=1)
    assert len(seen) >= 2


def test_single_threaded_caps_this_thread_only():
    with cpu.single_threaded():
        assert cpu.num_threads() == 1
        other = []
        t = threading.Thread(target=lambda: other.append(cpu.num_threads()))
        t.start()
        t.join()
    assert other[0] == cpu.num_threads()


# A child process measures the page faults of touching a fresh 1 MiB array after a 2 MiB one was freed. Without
# keep_host_memory glibc hands the 2 MiB (mmap'd) block back to the kernel, so the 1 MiB one faults its ~256 pages
# in anew; with it both come from the heap, the freed block is kept, and the new one reuses its pages.
_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from npformer.kernels.cpu import keep_host_memory
    assert keep_host_memory()
a = np.ones(1 << 18)  # 2 MiB
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(1 << 17)  # 1 MiB, every page touched
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="keep_host_memory acts on glibc only")
def test_keep_host_memory_reuses_freed_pages():
    control = _faults("default")
    if control < 128:  # this libc already reuses the pages: nothing for keep_host_memory to show
        pytest.skip(f"the default allocator already reuses freed pages here ({control} faults)")
    kept = _faults("keep")
    assert kept < control // 4, f"{kept} page faults with keep_host_memory, {control} without"
