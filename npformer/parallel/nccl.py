"""Collectives on device (CuPy) arrays over NCCL, for ``MPIDataParallel`` on the CuPy backend.

Why: sending a GPU's gradient through MPI would copy it to the host and back on every step (unless the MPI
library is CUDA-aware, which a pip-installed Open MPI is not). NCCL sums device buffers directly, over NVLink,
PCIe or the network. MPI only bootstraps it: rank 0 makes NCCL's unique id and broadcasts it (as plain bytes,
no pickle); every rank then joins one NCCL communicator. Each rank drives the GPU numbered by its rank among the
ranks of its machine (its "local rank", ``use_local_gpu``, called before the model is built), so
``mpiexec -n 4`` on a 4-GPU machine uses all four.

Where CuPy has no NCCL (``cupy.cuda.nccl`` missing or unusable) the runner is refused with a message saying so;
nothing falls back to the host silently.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .mpi import node_rank_and_size


def nccl_module():
    """cupy.cuda.nccl, or a ValueError saying why it cannot be used."""
    try:
        from cupy.cuda import nccl
    except Exception as exc:  # noqa: BLE001 -- ImportError, or a CUDA error while loading the library
        raise ValueError("MPIDataParallel: on the CuPy backend gradients are all-reduced over NCCL, and this CuPy "
                         f"has no NCCL (cupy.cuda.nccl: {type(exc).__name__}: {exc}); install NCCL (pip install "
                         "nvidia-nccl-cu12) or train on the NumPy backend") from None
    missing = [name for name in ("NcclCommunicator", "get_unique_id", "NCCL_SUM") if not hasattr(nccl, name)]
    if missing:
        raise ValueError(f"MPIDataParallel: this CuPy's NCCL binding lacks {missing}; it cannot all-reduce")
    return nccl


def use_local_gpu(comm) -> int:
    """Make this rank's current GPU the one numbered by its rank among the ranks of its machine (modulo the GPUs
    there); returns that number. Call it before building the model, so the model lands on that GPU."""
    import cupy

    n_devices = cupy.cuda.runtime.getDeviceCount()
    device = node_rank_and_size(comm)[0] % max(n_devices, 1)
    cupy.cuda.Device(device).use()
    return device


class NcclReducer:
    """Sum, broadcast and loss combination over NCCL on the current CuPy device stream."""

    _DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}

    def __init__(self, comm):
        nccl = nccl_module()
        import cupy

        self.nccl, self.cupy, self.comm = nccl, cupy, comm
        uid = np.zeros(128, dtype=np.int8)
        if comm.Get_rank() == 0:
            uid[...] = np.asarray(nccl.get_unique_id(), dtype=np.int64).astype(np.int8)
        comm.Bcast(uid, root=0)  # 128 bytes: NCCL's rendezvous, carried by MPI
        self.nccl_comm = nccl.NcclCommunicator(comm.Get_size(), tuple(int(b) for b in uid), comm.Get_rank())

    def _dtype(self, array):
        name = self._DTYPES.get(str(array.dtype))
        if name is None:
            raise ValueError(f"MPIDataParallel: NCCL cannot sum {array.dtype} arrays")
        return getattr(self.nccl, name)

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def allreduce_sum(self, buffer) -> None:
        self.nccl_comm.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self._dtype(buffer),
                                 self.nccl.NCCL_SUM, self._stream())

    def broadcast(self, array, root: int) -> None:
        contiguous = self.cupy.ascontiguousarray(array)
        self.nccl_comm.bcast(contiguous.data.ptr, contiguous.size, self._dtype(contiguous), root, self._stream())
        if contiguous is not array:
            array[...] = contiguous

    def combine_losses(self, local, shares, rank, like):
        """sum_r share_r * loss_r by one NCCL all-reduce of a one-element device buffer: no host sync."""
        xp = backend.array_module(like)
        mine = (like if local is None else local).astype(like.dtype).reshape(1) * shares[rank]
        mine = xp.ascontiguousarray(mine)
        self.allreduce_sum(mine)
        return mine.reshape(())
