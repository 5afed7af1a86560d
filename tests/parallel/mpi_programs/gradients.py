"""Under mpiexec: the MPI runner's loss and every gradient equal one process's on the same global batch.

argv: B (rows of the global batch), ignore_fraction, local workers per rank, out path (rank 0 writes a .npz of
the MPI run's loss and gradients; the test compares them with one process's)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

import numpy as np  # noqa: E402

from npformer.models import GPT, GPTConfig  # noqa: E402
from npformer.parallel.mpi import MPIDataParallel, abort_on_error, world  # noqa: E402


def main():
    B, ignore_fraction, workers, out = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    comm = world()
    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.0, seed=3))
    model.astype(np.float64)
    if comm.Get_rank() != 0:  # other ranks start elsewhere: the runner must broadcast rank 0's values
        for p in model.parameters():
            p.data[...] = 7.0
    rng = np.random.default_rng(B)
    x = rng.integers(0, 11, size=(B, 6))
    y = rng.integers(0, 11, size=(B, 6))
    y[rng.random((B, 6)) < ignore_fraction] = -100
    dp = MPIDataParallel(model, comm, workers=workers)
    model.zero_grad()
    for p in model.parameters():  # gradients add into what is there (accumulation)
        p.grad[...] = 0.25
    loss = dp.loss(x, y)
    dp.backward(0.5)
    arrays = {"loss": np.asarray(loss)}
    arrays.update({f"grad/{n}": p.grad for n, p in model.named_parameters()})
    everyone = comm.gather(float(loss), root=0)
    if comm.Get_rank() == 0:
        assert len(set(everyone)) == 1, everyone
        np.savez(out, **arrays)
    dp.close()


with abort_on_error():
    main()
