"""MPI data parallelism under ``mpiexec -n 2``: identical to one process, checkpoints that move between rank
counts, ZeRO-1 identical to unsharded, and faults that end the job instead of hanging it.

The MPI jobs (tests/parallel/mpi_programs/) run on the NumPy backend whatever NPFORMER_BACKEND says, so the
suite's second pass (NPFORMER_BACKEND=cupy) skips them rather than run the same jobs twice; the CuPy path's
refusal without NCCL is tested in test_mpi_local.py.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py")

from npformer.parallel.mpi_launch import find_mpiexec, mpiexec_command  # noqa: E402
from npformer.train.checkpoint import load_checkpoint  # noqa: E402

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_programs")
sys.path.insert(0, PROGRAMS)
from common import flat_parameters, global_batch, tiny_gpt, train_losses, trainer  # noqa: E402
from equivalence import CASES  # noqa: E402

pytestmark = [
    pytest.mark.skipif(find_mpiexec() is None, reason="no mpiexec (pip install 'npformer[mpi]')"),
    pytest.mark.skipif(os.environ.get("NPFORMER_BACKEND", "numpy") != "numpy",
                       reason="the MPI jobs run on the NumPy backend: run once, in the NumPy pass"),
]
JOB_TIMEOUT = 180  # seconds; a job that hangs fails the test instead of the suite


def mpirun(program, *args, timeout=JOB_TIMEOUT):
    # no_single_copy: works in containers that withhold ptrace rights (CI); speed does not matter here
    command, env = mpiexec_command(2, [os.path.join(PROGRAMS, program), *map(str, args)], no_single_copy=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The one MPI job whose results every equivalence test reads (its folder)."""
    out = tmp_path_factory.mktemp("mpi_equivalence")
    run = mpirun("equivalence.py", out)
    assert run.returncode == 0, f"the MPI job failed (exit {run.returncode}):\n{run.stdout}\n{run.stderr}"
    return out


def result(job, name):
    return np.load(os.path.join(job, name))


def test_loss_and_every_gradient_equal_one_process(job):
    """Uneven rows (5, 7, 3 over 2 ranks), a rank with no rows (B=1), ignored targets (all of them, or all on one
    rank), local worker processes under each rank, flat and per-parameter gradients: float64, 1e-12."""
    got = result(job, "gradients.npz")
    for i, (B, ignore, _, _) in enumerate(CASES):
        model = tiny_gpt()
        x, y = global_batch(B, ignore, seed=i)
        for p in model.parameters():
            p.grad[...] = 0.25
        loss = model.loss(x, y)
        model.backward(0.5)
        np.testing.assert_allclose(got[f"{i}/loss"], loss, rtol=1e-12, atol=1e-12, err_msg=f"case {i}: loss")
        for n, p in model.named_parameters():
            np.testing.assert_allclose(got[f"{i}/grad/{n}"], p.grad, rtol=1e-12, atol=1e-12,
                                       err_msg=f"case {i}: gradient of {n}")
        moved = max(np.abs(p.grad - 0.25).max() for p in model.parameters())
        assert moved > 1e-6 or (y == -100).all()  # the batch's gradient did arrive (the test can fail)


def test_steps_with_dropout_equal_one_process_with_as_many_workers(job):
    """Two ranks draw the dropout masks one process with 2 workers draws: 6 AdamW steps, grad_accum 2."""
    got = result(job, "dropout_full.npz")
    one = trainer(None, dropout=0.1, mpi=False, workers=2)
    one.run()
    np.testing.assert_allclose(got["params"], flat_parameters(one.model), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["losses"], train_losses(one), rtol=1e-12)
    assert len(got["losses"]) == 6


def test_steps_without_dropout_equal_one_unsplit_process(job):
    got = result(job, "plain_full.npz")
    one = trainer(None, mpi=False, workers=1)
    one.run()
    np.testing.assert_allclose(got["params"], flat_parameters(one.model), rtol=1e-9, atol=1e-10)
    assert np.abs(got["params"] - flat_parameters(tiny_gpt())).max() > 1e-3  # it did train


def test_local_worker_processes_under_each_rank_equal_one_process_with_all_the_workers(job):
    got = result(job, "local_workers.npz")
    one = trainer(None, dropout=0.1, mpi=False, workers=4)
    one.run()
    np.testing.assert_allclose(got["params"], flat_parameters(one.model), rtol=1e-12, atol=1e-12)


def test_a_2_rank_checkpoint_resumes_exactly_with_2_ranks(job):
    for tag in ("dropout", "plain"):
        full, resumed = result(job, f"{tag}_full.npz"), result(job, f"{tag}_resumed.npz")
        assert int(resumed["step"][0]) == 6
        np.testing.assert_array_equal(resumed["params"], full["params"])


def test_a_2_rank_checkpoint_resumes_with_1_rank(job, tmp_path, monkeypatch):
    """Without dropout on one unsplit process (to float rounding); with dropout on one process with 2 workers
    (the same masks)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no loss plots: they would be most of the time
    for tag, workers, tol in (("plain", 1, 1e-10), ("dropout", 2, 1e-12)):
        folder = tmp_path / tag
        shutil.copytree(os.path.join(job, f"{tag}_ckpt"), folder)
        assert load_checkpoint(folder / "ckpt.npz").meta["step"] == 3
        one = trainer(str(folder), dropout=0.1 if tag == "dropout" else 0.0, mpi=False, workers=workers)
        one.resume()
        one.run()
        np.testing.assert_allclose(flat_parameters(one.model), result(job, f"{tag}_full.npz")["params"],
                                   rtol=1e-9, atol=tol, err_msg=tag)


def test_zero1_is_identical_to_unsharded_and_halves_optimizer_memory(job):
    np.testing.assert_array_equal(result(job, "zero_resumed.npz")["params"], result(job, "dropout_full.npz")["params"])
    np.testing.assert_array_equal(result(job, "zero_local_workers.npz")["params"],
                                  result(job, "local_workers.npz")["params"])
    memory = result(job, "zero_memory.npz")
    sharded, unsharded = int(memory["sharded"]), int(memory["unsharded"])
    assert unsharded == 2 * 8 * tiny_gpt().num_parameters()
    assert abs(sharded - unsharded / 2) <= 16  # rank 0's half, give or take an element


def test_an_exception_on_one_rank_ends_every_rank_with_its_message(tmp_path):
    run = mpirun("faults.py", tmp_path, "raise", timeout=60)
    assert run.returncode != 0
    assert "error on MPI rank 1 of 2: injected failure at step 4" in run.stderr
    assert "Traceback" in run.stderr  # an unexpected error keeps its traceback
    assert load_checkpoint(tmp_path / "ckpt.npz").meta["step"] == 3


def test_a_killed_rank_ends_the_run_and_the_last_checkpoint_resumes(tmp_path, monkeypatch):
    run = mpirun("faults.py", tmp_path, "kill", timeout=60)
    assert run.returncode != 0
    message = " ".join(run.stderr.split())
    assert "rank 1" in message and ("signal 9" in message or "Killed" in message), run.stderr
    # rank 0, stopped by mpiexec while it waited for rank 1 in a collective, says where the last good state is
    assert f"stopped at step 4: the last checkpoint is {tmp_path / 'ckpt.npz'} (step 3)" in run.stderr, run.stderr
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one = trainer(str(tmp_path), max_iters=8, mpi=False, workers=2)
    one.resume()
    assert one.step == 3
    one.run()
    assert one.step == 8


def test_parameters_that_drift_apart_stop_the_run(tmp_path):
    run = mpirun("faults.py", tmp_path, "diverge", timeout=60)
    assert run.returncode != 0
    assert "differ from rank 0's" in run.stderr, run.stderr


def test_ranks_with_different_data_are_refused(tmp_path):
    run = mpirun("faults.py", tmp_path, "data", timeout=60)
    assert run.returncode == 2  # a user's mistake: ValueError, exit code 2
    assert "training or validation tokens on MPI rank(s) [1] differ from rank 0's" in run.stderr, run.stderr


TRAIN_CHAR = os.path.join(PROGRAMS, "..", "..", "..", "examples", "train_char.py")
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "5",
        "--eval-iters", "1", "--eval-interval", "2", "--log-interval", "2", "--samples", "1", "--sample-tokens", "5",
        "--workers", "1", "--zero1"]


def test_train_char_under_mpiexec_reports_once_and_resumes(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    out = tmp_path / "out"
    first = mpirun(TRAIN_CHAR, "--data", corpus, "--max-iters", "4", "--out-dir", out, *TINY)
    assert first.returncode == 0, first.stderr
    for line in ("data parallel: 2 MPI ranks x 1 local worker;", "optimizer state per rank (ZeRO-1): rank 0",
                 "trained to step 4", "---- sample 1 ----"):
        assert first.stdout.count(line) == 1, (line, first.stdout)  # rank 0 alone prints
    assert load_checkpoint(out / "ckpt.npz").meta["step"] == 4
    again = mpirun(TRAIN_CHAR, "--data", corpus, "--max-iters", "6", "--out-dir", out, "--resume", *TINY)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(f"resumed from {out / 'ckpt.npz'} at step 4") == 1
    assert load_checkpoint(out / "ckpt.npz").meta["step"] == 6
