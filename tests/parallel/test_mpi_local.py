"""The MPI runner's pieces in this one process (a job of one rank, no mpiexec): the runner on COMM_SELF equals
the model, ZeRO-1 on one rank equals AdamW and shares its checkpoint format, the CuPy path is refused clearly
without NCCL, and the launch helpers. The two-rank behaviour is tested under mpiexec in test_mpi.py."""

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("mpi4py")

from npformer import backend  # noqa: E402
from npformer.models import GPT, GPTConfig  # noqa: E402
from npformer.parallel.mpi import (  # noqa: E402
    MPIDataParallel,
    abort_on_error,
    broadcast_file,
    describe_failure,
    launched_size,
    rank_chunks,
)
from npformer.parallel.mpi_launch import mpiexec_command  # noqa: E402
from npformer.train.checkpoint import CheckpointError, load_checkpoint_bytes  # noqa: E402
from npformer.train.optim import AdamW, param_groups  # noqa: E402
from npformer.train.trainer import TrainConfig, Trainer  # noqa: E402
from npformer.train.zero import ZeroAdamW  # noqa: E402

DATA = (np.arange(2000) * 5) % 13


@pytest.fixture(scope="module")
def comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


def _gpt(dropout=0.0, float64=True):
    model = GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8, dropout=dropout, seed=2))
    if float64:
        model.astype(np.float64)
        model.flatten_parameters()
    return model


def _batch(B=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 13, size=(B, 6)), rng.integers(0, 13, size=(B, 6))


@pytest.mark.parametrize("workers", [1, 2])
def test_one_rank_equals_the_model(comm, workers):
    x, y = _batch()
    ref = _gpt()
    loss = ref.loss(x, y)
    ref.backward(0.5)
    model = _gpt()
    dp = MPIDataParallel(model, comm, workers=workers, mode="threads")
    assert (dp.rank, dp.size, dp.workers) == (0, 1, workers)
    got = dp.loss(x, y)
    dp.backward(0.5)
    with pytest.raises(RuntimeError, match="call loss"):  # a second backward needs a new loss
        dp.backward()
    np.testing.assert_allclose(got, loss, rtol=1e-12)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-14)
    dp.check_parameters()  # one rank always agrees with itself
    dp.close()


def test_bad_arguments_are_named(comm):
    with pytest.raises(ValueError, match="workers"):
        MPIDataParallel(_gpt(), comm, workers=0)
    with pytest.raises(ValueError, match="check_every"):
        MPIDataParallel(_gpt(), comm, check_every=-1)
    with pytest.raises(ValueError, match="same shape"):
        MPIDataParallel(_gpt(), comm).loss(np.zeros((2, 6), dtype=np.int64), np.zeros((2, 5), dtype=np.int64))


def test_cupy_backend_without_nccl_is_refused(comm):
    """The stand-in CuPy (or a CuPy without NCCL) has no cupy.cuda.nccl: the runner says so, no silent host path."""
    with backend.use_backend("cupy"):
        model = GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8, seed=2))
        try:
            from cupy.cuda import nccl  # noqa: F401
        except Exception:  # noqa: BLE001
            with pytest.raises(ValueError, match="NCCL"):
                MPIDataParallel(model, comm)
        else:
            pytest.skip("this CuPy has NCCL: the refusal cannot be shown here")


def test_checksum_sees_any_change(comm):
    model = _gpt()
    dp = MPIDataParallel(model, comm)
    before = dp.parameter_checksum()
    model.parameters()[0].data.reshape(-1)[0] = np.nextafter(model.parameters()[0].data.reshape(-1)[0], 9.0)
    assert dp.parameter_checksum() != before


def test_zero1_on_one_rank_is_adamw_and_shares_its_checkpoint_format(comm):
    a, b = _gpt(), _gpt()
    opt_a = AdamW(param_groups(a.named_parameters(), 0.1), lr=1e-2, betas=(0.9, 0.99))
    opt_b = ZeroAdamW(param_groups(b.named_parameters(), 0.1), lr=1e-2, betas=(0.9, 0.99), comm=comm)
    for step in range(4):
        x, y = _batch(seed=step)
        for model, opt in ((a, opt_a), (b, opt_b)):
            model.zero_grad()
            model.loss(x, y)
            model.backward()
            opt.set_lr(1e-2 / (step + 1))
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    state = opt_b.state_dict()
    assert state.keys() == opt_a.state_dict().keys()
    for key, value in opt_a.state_dict().items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(state[key], value)
    fresh = AdamW(param_groups(_gpt().named_parameters(), 0.1), lr=1e-2)
    fresh.load_state_dict(state)  # a sharded run resumes unsharded ...
    again = ZeroAdamW(param_groups(_gpt().named_parameters(), 0.1), lr=1e-2, comm=comm)
    again.load_state_dict(opt_a.state_dict())  # ... and the other way round
    np.testing.assert_array_equal(again.exp_avg_sq, opt_b.exp_avg_sq)
    assert again.step_count == 4 and again.memory_bytes() == opt_b.unsharded_bytes()
    with pytest.raises(ValueError, match="does not fit"):
        again.load_state_dict({**state, "kind": "SGD"})


def test_zero1_needs_flat_parameters(comm):
    model = _gpt(float64=False)
    model.astype(np.float64)  # un-flattens
    with pytest.raises(ValueError, match="flatten_parameters"):
        ZeroAdamW(param_groups(model.named_parameters(), 0.1), comm=comm)


def test_trainer_on_one_mpi_rank_equals_the_trainer_without(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no loss plots: they would be most of the time
    def run(out, mpi, zero1=False, resume=False, max_iters=4):
        cfg = TrainConfig(max_iters=max_iters, batch_size=3, warmup_iters=1, lr_decay_iters=6, eval_interval=2,
                          eval_iters=1, log_interval=1, out_dir=str(out), seed=1, quiet=True, mpi=mpi, zero1=zero1)
        t = Trainer(_gpt(dropout=0.1), cfg, DATA[:1800], DATA[1800:])
        if resume:
            t.resume()
        t.run()
        return np.concatenate([p.data.reshape(-1) for p in t.model.parameters()])

    plain = run(tmp_path / "a", False, max_iters=6)
    run(tmp_path / "b", True, zero1=True)
    np.testing.assert_array_equal(run(tmp_path / "b", True, zero1=True, resume=True, max_iters=6), plain)
    with pytest.raises(CheckpointError, match="no such file"):
        run(tmp_path / "missing", True, resume=True)


def test_config_refuses_zero1_without_mpi():
    with pytest.raises(ValueError, match="zero1"):
        TrainConfig(zero1=True, mpi=False).validate()
    with pytest.raises(ValueError, match="check_every"):
        TrainConfig(check_every=-1).validate()
    with pytest.raises(ValueError, match="zero1"):
        Trainer(_gpt(), TrainConfig(zero1=True, max_iters=2), DATA[:1800], DATA[1800:])


def test_broadcast_file_and_checkpoint_bytes(comm, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"\x00abc")
    assert broadcast_file(path, comm) == b"\x00abc"
    with pytest.raises(FileNotFoundError, match="rank 0 could not read"):
        broadcast_file(tmp_path / "nope", comm)
    with pytest.raises(CheckpointError, match="not a .npz"):
        load_checkpoint_bytes(b"not a zip", "x.npz")


def test_launched_size_reads_the_launcher_environment(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert launched_size() == 1
    monkeypatch.setenv("PMI_SIZE", "4")
    assert launched_size() == 4
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "junk")
    assert launched_size() == 4


def test_failure_messages_name_the_rank():
    assert describe_failure(ValueError("bad  flag\nhere"), 1, 2) == "error on MPI rank 1 of 2: bad flag here"
    try:
        raise RuntimeError("broken")
    except RuntimeError as exc:
        text = describe_failure(exc, 0, 3)
    assert text.startswith("error on MPI rank 0 of 3: broken") and "Traceback" in text


def test_abort_on_error_with_one_rank_raises_as_usual(comm):
    with pytest.raises(KeyError):
        with abort_on_error(comm):
            raise KeyError("x")


def test_mpiexec_command():
    command, env = mpiexec_command(2, ["prog.py", "a"], mpiexec="/bin/echo")
    assert command[-5:] == ["-n", "2", os.sys.executable, "prog.py", "a"]


class _FakeNccl:
    """Just enough of cupy.cuda.nccl for one rank (where a sum over ranks is the buffer itself): records the
    calls, so the device path's plumbing (pointers, counts, dtypes) runs on the CuPy stand-in."""

    NCCL_SUM, NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 0, 6, 7, 8

    def __init__(self):
        self.calls = []
        fake = self

        class NcclCommunicator:
            def __init__(self, n, uid, rank):
                assert (n, rank, len(uid)) == (1, 0, 128)

            def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802 -- NCCL's name
                assert send == recv and op == fake.NCCL_SUM
                fake.calls.append(("allReduce", count, dtype))

            def bcast(self, ptr, count, dtype, root, stream):
                fake.calls.append(("bcast", count, dtype))

        self.NcclCommunicator = NcclCommunicator

    @staticmethod
    def get_unique_id():
        return tuple(range(-64, 64))


def test_the_nccl_path_on_one_rank_equals_the_model(comm, monkeypatch):
    """The CuPy path with a stand-in NCCL: gradient buffer, loss and checksum stay on the device, and the result
    is the model's. (Real NCCL across GPUs is not available here: this checks the code path, not NCCL.)"""
    import types

    fake = _FakeNccl()
    with backend.use_backend("cupy"):
        cupy = backend.xp()
        module = types.ModuleType("cupy.cuda")
        module.nccl = fake
        monkeypatch.setitem(__import__("sys").modules, "cupy.cuda", module)
        monkeypatch.setattr(type(cupy.cuda), "get_current_stream",
                            staticmethod(lambda: types.SimpleNamespace(ptr=0)), raising=False)
        x, y = _batch(B=4)
        ref = GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8, seed=2))
        loss = ref.loss(backend.asarray(x), backend.asarray(y))
        ref.backward()
        model = GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8, seed=2))
        dp = MPIDataParallel(model, comm)
        got = dp.loss(backend.asarray(x), backend.asarray(y))
        dp.backward()
        assert backend.array_module(got) is cupy
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(loss), rtol=1e-6)
        for p, q in zip(model.parameters(), ref.parameters()):
            np.testing.assert_allclose(backend.to_numpy(p.grad), backend.to_numpy(q.grad), rtol=1e-5, atol=1e-7)
        dp.check_parameters()
    n = model.num_parameters()
    assert ("allReduce", n, fake.NCCL_FLOAT32) in fake.calls  # the one gradient all-reduce, over the flat buffer
    assert sum(c for kind, c, _ in fake.calls if kind == "bcast") == n  # rank 0's parameters, once


@settings(deadline=None)
@given(B=st.integers(1, 40), ranks=st.integers(1, 6), workers=st.integers(1, 4))
def test_each_rank_gets_contiguous_rows_that_its_local_runner_cuts_as_one_process_would(B, ranks, workers):
    from npformer.parallel.split import batch_chunks

    chunks, mine = rank_chunks(B, ranks, workers)
    assert chunks == batch_chunks(B, ranks * workers)
    assert [k for m in mine for k in m] == list(range(len(chunks)))  # every chunk once, in rank order
    for r, indices in enumerate(mine):
        if not indices:
            assert r > 0 and len(chunks) <= r * workers  # only ranks past the batch's rows go without
            continue
        start, stop = chunks[indices[0]][0], chunks[indices[-1]][1]
        local = [(a + start, b + start) for a, b in batch_chunks(stop - start, workers)]
        assert local == [chunks[k] for k in indices]
