"""Train a Transformer encoder (BERT-style) to tell balanced bracket strings from unbalanced ones.

The data is generated in code (npformer.data.tasks.BracketTask): "[CLS] ( ( ) ) ( )" is balanced (label 1),
"[CLS] ( ) ) ( ( )" is not (label 0). Most negatives have as many "(" as ")", so counting is not enough: the
model has to notice a prefix that closes more than it opened. Strings have different lengths in one batch: the
padding is masked out of attention (and out of the pooling with --pooling mean). With no arguments it reaches
>= 98% held-out accuracy in a few minutes on 2 CPU cores.

    python examples/train_classifier.py                      # the default run
    python examples/train_classifier.py --pooling mean --max-len 12
    python examples/train_classifier.py --norm-placement post --positions sinusoidal

Every EncoderConfig and ClassifierTrainConfig field is a flag: see --help.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is

import npformer  # noqa: E402
from npformer import backend  # noqa: E402
from npformer.data.tasks import BracketTask  # noqa: E402
from npformer.models import Encoder, EncoderConfig  # noqa: E402
from npformer.train.cli import add_dataclass_args, add_debug_flag, dataclass_from_args, run_script  # noqa: E402,E501
from npformer.train.config import check_positive, fit_warmup  # noqa: E402
from npformer.train.optim import AdamW, clip_grad_norm, param_groups  # noqa: E402
from npformer.train.schedules import warmup_cosine  # noqa: E402

MODEL_DEFAULTS = dict(n_layer=2, n_head=4, n_embd=64, ffn_hidden=128, dropout=0.0, pooling="first",
                      norm_placement="pre", positions="learned")


@dataclass
class ClassifierTrainConfig:
    """The task and how to train on it."""

    min_len: int = 2
    max_len: int = 16
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    min_lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 250
    n_eval: int = 2000
    n_show: int = 8
    seed: int = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["numpy", "cupy"], default=os.environ.get("NPFORMER_BACKEND", "numpy"))
    add_dataclass_args(p, EncoderConfig, MODEL_DEFAULTS,
                       skip=("vocab_size", "max_len", "pad_id", "mlm_head", "n_classes", "seed"),
                       title="model (EncoderConfig)")
    add_debug_flag(p)
    add_dataclass_args(p, ClassifierTrainConfig, title="task and training (ClassifierTrainConfig)")
    return p.parse_args(argv)


def accuracy(model, ids, labels, batch_size=500):
    """Fraction of rows whose arg-max class equals the label, and the predictions (host)."""
    model.eval()
    preds = []
    for i in range(0, ids.shape[0], batch_size):
        logits = model.classify(backend.asarray(ids[i:i + batch_size]))
        preds.append(backend.to_numpy(logits.argmax(axis=-1)))
    pred = np.concatenate(preds)
    return float((pred == labels).mean()), pred


def main(argv=None) -> dict:
    args = parse_args(argv)
    npformer.set_backend(args.backend)
    tc = dataclass_from_args(ClassifierTrainConfig, args)
    check_positive(tc, ("steps", "batch_size", "eval_every", "n_eval", "min_len", "max_len"))
    tc.warmup_steps, note = fit_warmup(tc.warmup_steps, tc.steps, "warmup_steps")  # a short run still gets one
    if note:
        print(f"note: {note}")
    task = BracketTask(tc.min_len, tc.max_len)
    cfg = dataclass_from_args(EncoderConfig, args, vocab_size=task.vocab_size, max_len=1 + tc.max_len, pad_id=0,
                              mlm_head=False, n_classes=task.n_classes, seed=tc.seed)
    model = Encoder(cfg)
    print(f"task: balanced brackets, lengths {tc.min_len}-{tc.max_len}")
    print(f"model: {model.num_parameters():,} parameters, {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} "
          f"heads, {cfg.norm_placement}-LN, {cfg.positions} positions, pooling {cfg.pooling!r}, backend {args.backend}")

    opt = AdamW(param_groups(model.named_parameters(), tc.weight_decay), lr=tc.learning_rate, betas=(0.9, 0.98))
    schedule = warmup_cosine(tc.learning_rate, tc.warmup_steps, tc.steps, tc.min_lr)
    train_rng = np.random.default_rng(tc.seed)
    eval_ids, eval_labels = task.sample(np.random.default_rng(tc.seed + 10_000), tc.n_eval)

    t0 = time.time()
    for step in range(tc.steps):
        ids, labels = task.sample(train_rng, tc.batch_size)
        opt.set_lr(schedule(step))
        opt.zero_grad()
        model.train()
        loss = model.classify_loss(backend.asarray(ids), backend.asarray(labels))
        model.backward()
        if tc.grad_clip > 0:
            clip_grad_norm(model.parameters(), tc.grad_clip)
        opt.step()
        if step % 50 == 0 or step == tc.steps - 1:
            print(f"step {step:5d}  loss {backend.to_float(loss):.4f}  lr {schedule(step):.2e}  "
                  f"{time.time() - t0:6.1f}s", flush=True)
        if (step + 1) % tc.eval_every == 0 and step + 1 < tc.steps:
            acc, _ = accuracy(model, eval_ids, eval_labels)
            print(f"step {step + 1:5d}  held-out accuracy {acc:.2%}", flush=True)
    train_time = time.time() - t0

    acc, pred = accuracy(model, eval_ids, eval_labels)
    print(f"\nheld-out accuracy: {acc:.2%} of {tc.n_eval} examples; trained {tc.steps} steps in {train_time:.1f}s")
    print("examples (string: truth / prediction):")
    for i in range(min(tc.n_show, tc.n_eval)):
        truth = "balanced" if eval_labels[i] else "unbalanced"
        mark = "ok" if pred[i] == eval_labels[i] else "WRONG"
        print(f"  {task.to_text(eval_ids[i]):>{tc.max_len}}  {truth:<10}  {mark}")
    return dict(accuracy=acc, train_time=train_time, steps=tc.steps, config=dataclasses.asdict(cfg))


if __name__ == "__main__":
    sys.exit(run_script(main))
