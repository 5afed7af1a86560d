"""Under mpiexec -n 2: everything the equivalence tests compare with one process, in one MPI job.

argv[1]: a folder; rank 0 writes its results there (.npz files), and the runs' checkpoints go under it:
- gradients.npz: for each case of CASES, the loss and every gradient of the MPI runner on a global batch;
- dropout_full.npz: 6 AdamW steps with dropout (grad_accum 2), one run;
- dropout_resumed.npz: 3 steps, then a new Trainer resumed from that checkpoint for 3 more (dropout_ckpt/);
- plain_full.npz, plain_ckpt/: the same without dropout (for the 1-rank resume);
- zero_resumed.npz: as dropout_resumed with ZeRO-1 both times;
- local_workers.npz, zero_local_workers.npz: 6 steps with dropout, 2 local worker processes per rank (the
  second with ZeRO-1, whose optimizer is made after the workers moved the parameters into shared memory).
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from common import flat_parameters, global_batch, tiny_gpt, train_losses, trainer, without_plots  # noqa: E402

from npformer.parallel.mpi import MPIDataParallel, abort_on_error  # noqa: E402

# (rows of the global batch, fraction of targets ignored, local workers per rank, flattened parameters)
CASES = [(5, 0.3, 1, True), (1, 0.0, 1, True), (7, 0.5, 2, False), (4, 1.0, 1, True), (6, 0.0, 3, True),
         (3, 0.9, 1, False)]


def gradients(comm, out):
    results = {}
    for i, (B, ignore, workers, flat) in enumerate(CASES):
        model = tiny_gpt()
        if not flat:
            model.astype(np.float32).astype(np.float64)  # astype un-flattens: the per-parameter path
        if comm.Get_rank() != 0:  # rank 1 starts from other values: the runner broadcasts rank 0's
            for p in model.parameters():
                p.data[...] = 7.0
        x, y = global_batch(B, ignore, seed=i)
        dp = MPIDataParallel(model, comm, workers=workers, mode="processes")
        for p in model.parameters():
            p.grad[...] = 0.25  # backward adds into what is there (gradient accumulation)
        loss = dp.loss(x, y)
        dp.backward(0.5)
        dp.close()
        losses = comm.allgather(float(loss))
        assert losses[0] == losses[1], f"case {i}: ranks disagree on the loss {losses}"
        results[f"{i}/loss"] = np.asarray(loss)
        results.update({f"{i}/grad/{n}": p.grad.copy() for n, p in model.named_parameters()})
    if comm.Get_rank() == 0:
        np.savez(os.path.join(out, "gradients.npz"), **results)


def save(t, out, name):
    if t.is_root:
        np.savez(os.path.join(out, name), params=flat_parameters(t.model), losses=train_losses(t),
                 step=np.array([t.step]))


def trainings(comm, out):
    for dropout, tag in ((0.1, "dropout"), (0.0, "plain")):
        full = trainer(os.path.join(out, f"{tag}_full"), dropout=dropout)
        full.run()
        save(full, out, f"{tag}_full.npz")
        half = trainer(os.path.join(out, f"{tag}_run"), max_iters=3, dropout=dropout)
        half.run()
        comm.Barrier()
        if comm.Get_rank() == 0:  # keep the step-3 checkpoint for the tests' 1-rank resumes
            shutil.copytree(os.path.join(out, f"{tag}_run"), os.path.join(out, f"{tag}_ckpt"))
        comm.Barrier()
        resumed = trainer(os.path.join(out, f"{tag}_run"), dropout=dropout)
        resumed.resume()
        resumed.run()
        save(resumed, out, f"{tag}_resumed.npz")
    half = trainer(os.path.join(out, "zero_run"), max_iters=3, dropout=0.1, zero1=True)
    half.run()
    resumed = trainer(os.path.join(out, "zero_run"), dropout=0.1, zero1=True)
    resumed.resume()
    resumed.run()
    save(resumed, out, "zero_resumed.npz")
    if resumed.is_root:
        np.savez(os.path.join(out, "zero_memory.npz"), sharded=resumed.optimizer.memory_bytes(),
                 unsharded=resumed.optimizer.unsharded_bytes())
    for zero1, name in ((False, "local_workers"), (True, "zero_local_workers")):
        local = trainer(os.path.join(out, name), dropout=0.1, workers=2, parallel="processes", zero1=zero1)
        local.run()
        local.runner.close()
        save(local, out, f"{name}.npz")


if __name__ == "__main__":
    without_plots()
    with abort_on_error() as comm:
        gradients(comm, sys.argv[1])
        trainings(comm, sys.argv[1])
