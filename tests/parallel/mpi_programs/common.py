"""What the MPI test programs and the tests that check them share: the tiny model, data and training config."""

import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

import numpy as np  # noqa: E402

from npformer.models import GPT, GPTConfig  # noqa: E402
from npformer.train.trainer import TrainConfig, Trainer  # noqa: E402

DATA = (np.arange(3000) * 7 + (np.arange(3000) // 11)) % 17
VOCAB = 17


def without_plots() -> None:
    """In an MPI program (never in the test process): the trainer's loss plots would be most of a run's time."""
    sys.modules.setdefault("matplotlib", None)


def tiny_gpt(dropout=0.0, seed=3):
    """A float64 GPT, flattened (one parameter buffer, as float32 GPTs are from the start)."""
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=dropout, seed=seed))
    model.astype(np.float64)
    model.flatten_parameters()
    return model


def trainer(out_dir, max_iters=6, dropout=0.0, mpi=None, workers=1, zero1=False, parallel="threads",
            batch_size=5, grad_accum=2, check_every=2, data=DATA):
    """A Trainer on the tiny GPT whose schedule does not depend on max_iters (so a run to 3 then resumed to 6
    equals one run to 6); evaluation and checkpoint every 3 steps."""
    model = tiny_gpt(dropout)
    cfg = TrainConfig(max_iters=max_iters, batch_size=batch_size, grad_accum=grad_accum, learning_rate=3e-2,
                      warmup_iters=1, lr_decay_iters=8, eval_interval=3, eval_iters=2, log_interval=1,
                      out_dir=out_dir, seed=5, quiet=True, workers=workers, parallel=parallel, mpi=mpi, zero1=zero1,
                      check_every=check_every)
    return Trainer(model, cfg, data[:2700], data[2700:], meta={"note": "mpi test"})


def flat_parameters(model):
    return np.concatenate([p.data.reshape(-1) for p in model.parameters()])


def train_losses(t):
    return np.array([r["train_loss"] for r in t.history if r["val_loss"] == ""], dtype=np.float64)


def global_batch(B, ignore_fraction, seed):
    """(x, y): (B, 6) token ids and targets, a fraction of the targets ignored (-100)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, size=(B, 6))
    y = rng.integers(0, VOCAB, size=(B, 6))
    y[rng.random((B, 6)) < ignore_fraction] = -100
    return x, y


def inject_fault(t, kind, step):
    """Make rank 1 fail when trainer ``t`` reaches ``step``: raise, die by SIGKILL, or nudge its parameters."""
    loss = t.runner.loss

    def failing(x, y, **kw):
        if t.rank == 1 and t.step == step and t.model.training:
            if kind == "raise":
                raise RuntimeError(f"injected failure at step {step}")
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "diverge":
                t.model.parameters()[0].data.reshape(-1)[0] += 1e-3
        return loss(x, y, **kw)

    t.runner.loss = failing
