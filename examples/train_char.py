"""Train a character-level GPT, then print samples from it.

With no arguments it trains a small model for a few minutes on 2 CPU cores on Python source text taken from this
interpreter's own standard library (nothing to download). Examples:

    python examples/train_char.py                                  # the default run
    python examples/train_char.py --data ../shared/data/tinyshakespeare.txt --max-iters 2000
    python examples/train_char.py --resume                         # continue from out/train_char/ckpt.npz
    python examples/train_char.py --preset llama-style --n-layer 2 --max-iters 200
    python examples/train_char.py --backend cupy                   # on a GPU (pip install 'npformer[cuda12]')
    python examples/train_char.py --workers 1                      # the model alone (default: a replica per core)
    python examples/train_char.py --kernels reference              # train on the reference tier, the code to read
    python examples/train_char.py --data photo.jpg --tokenizer byte    # any file, one token per byte
    mpiexec -n 2 python examples/train_char.py                     # data-parallel over 2 MPI ranks
    mpiexec -n 2 python examples/train_char.py --zero1             # ... with AdamW's moments sharded (ZeRO-1)

Under mpiexec (pip install 'npformer[mpi]') every rank trains on its rows of each batch and the result equals one
process's up to float rounding; rank 0 alone prints, reports and writes the checkpoint, and every
rank resumes from it (--resume). An error on any rank ends the whole job with that rank's message.

A mistake in the flags or the data (a missing or non-UTF-8 file, text too short for the context, a model that does
not divide into heads) is one line starting "error:" and exit code 2; --debug shows the traceback instead.

Every GPTConfig and TrainConfig field is a flag: see --help. The checkpoint (config, tokenizer, parameters,
optimizer state) lands in --out-dir; examples/sample.py writes more text from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is

import npformer  # noqa: E402
from npformer.data import ByteTokenizer, CharTokenizer, check_long_enough, read_corpus, train_val_split  # noqa: E402
from npformer.data.corpora import stdlib_corpus  # noqa: E402
from npformer.data.text_files import TOKENIZER_KINDS  # noqa: E402
from npformer.decode.generate import generate  # noqa: E402
from npformer.models import GPT, GPTConfig  # noqa: E402
from npformer.models.config import PRESETS  # noqa: E402
from npformer.parallel.mpi import abort_on_error, launched_size, note_when_stopped  # noqa: E402
from npformer.train.cli import INTERRUPTED, add_dataclass_args, add_debug_flag, dataclass_from_args, run_script  # noqa: E402,E501
from npformer.train.trainer import TrainConfig, Trainer  # noqa: E402

# The baby GPT of nanoGPT's README (CPU overrides); 3000 steps take about 2 minutes on 2 cores.
MODEL_DEFAULTS = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True)
TRAIN_DEFAULTS = dict(max_iters=3000, batch_size=12, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                      eval_interval=250, eval_iters=20, log_interval=50, out_dir="out/train_char",
                      workers=None)  # one model replica per core (npformer.parallel.DataParallel)
VAL_FRACTION = 0.1  # the last 10% of the text is held out for validation


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a text file to train on (default: Python standard-library source)")
    p.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="char",
                   help="char: the file's distinct characters (UTF-8 text); byte: its 256 byte values (any file)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2-style",
                   help="model family; explicit model flags override it")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=os.environ.get("NPFORMER_BACKEND", "numpy"))
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    p.add_argument("--samples", type=int, default=2, help="samples to print at the end")
    p.add_argument("--sample-tokens", type=int, default=300, help="characters per sample")
    p.add_argument("--prompt", default="\n", help="text the samples start from")
    add_debug_flag(p)
    # model flags left unset (None) keep the preset's choice
    model_defaults = {**{name: None for name in GPTConfig.__dataclass_fields__}, **MODEL_DEFAULTS}
    add_dataclass_args(p, GPTConfig, model_defaults, skip=("vocab_size", "seed"), title="model (GPTConfig)")
    add_dataclass_args(p, TrainConfig, TRAIN_DEFAULTS, title="training (TrainConfig)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mpi if args.mpi is not None else launched_size() > 1:
        with abort_on_error() as comm:  # an error on any rank ends every rank, with that rank's message
            return train(args, comm)
    return train(args, None)


def train(args, comm) -> int:
    rank = 0 if comm is None else comm.Get_rank()
    say = print if rank == 0 else (lambda *a, **k: None)  # rank 0 alone prints
    npformer.set_backend(args.backend)
    if comm is not None and args.backend == "cupy":  # one GPU per rank on each machine, before the model is built
        from npformer.parallel.nccl import nccl_module, use_local_gpu

        nccl_module()  # refuse early, with the reason, where NCCL is missing
        use_local_gpu(comm)
    npformer.kernels.cpu.keep_host_memory()  # reuse freed activation memory instead of faulting it in every step

    if args.data:
        ids, tokenizer = read_corpus(args.data, args.tokenizer)
        source = args.data
    else:
        text = stdlib_corpus()
        tokenizer = CharTokenizer.from_text(text) if args.tokenizer == "char" else ByteTokenizer()
        ids, source = tokenizer.encode(text), "Python standard-library source"

    overrides = {k: v for k, v in vars(args).items() if k in GPTConfig.__dataclass_fields__ and v is not None}
    overrides.update(vocab_size=tokenizer.vocab_size, seed=args.seed)  # the model's seed is the run's --seed
    model_config = GPTConfig.preset(args.preset, **overrides)
    unit = "bytes" if args.tokenizer == "byte" else "characters"
    check_long_enough(len(ids), model_config.block_size, VAL_FRACTION, repr(source), unit)
    train_ids, val_ids = train_val_split(ids, val_fraction=VAL_FRACTION)
    say(f"data: {source}: {len(ids):,} {unit}, vocabulary {tokenizer.vocab_size}, "
          f"{len(train_ids):,} train / {len(val_ids):,} validation tokens")
    model = GPT(model_config)
    train_config = dataclass_from_args(TrainConfig, args)
    say(f"model: {model.num_parameters():,} parameters, {model_config.n_layer} layers, {model_config.n_head} "
          f"heads, width {model_config.n_embd}, context {model_config.block_size}, backend {args.backend}, "
          f"kernels {model_config.kernels or npformer.get_kernels()}")

    trainer = Trainer(model, train_config, train_ids, val_ids, meta={"tokenizer": tokenizer.to_dict()})
    if comm is not None:
        if rank == 0:  # a rank that fails or is killed ends the job: say where the last good state is
            note_when_stopped(lambda: f"stopped at step {trainer.step}: mpiexec is ending the job (a rank failed or "
                                      f"was killed, or it was interrupted); {trainer.last_checkpoint_note()}"
                                      + ("; continue with --resume" if trainer.last_checkpoint_step is not None
                                         else ""))
        runner = trainer.runner
        ranks, workers = runner.size, runner.local_workers
        say(f"data parallel: {ranks} MPI rank{'s' * (ranks != 1)} x {workers} local worker{'s' * (workers != 1)}; "
            "rank 0 reports")
        if train_config.zero1:  # each rank's optimizer memory: about 1/ranks of AdamW's
            memory = comm.gather(trainer.optimizer.memory_bytes(), root=0)
            say("optimizer state per rank (ZeRO-1): " + ", ".join(f"rank {r} {m / 2**20:.2f} MiB"
                                                                 for r, m in enumerate(memory or []))
                + f"; unsharded AdamW: {trainer.optimizer.unsharded_bytes() / 2**20:.2f} MiB on every rank")
    checkpoint = trainer.checkpoint_path
    if args.resume:
        if checkpoint is None:
            raise ValueError("--resume needs an --out-dir to find the checkpoint in")
        trainer.resume()
        say(f"resumed from {checkpoint} at step {trainer.step}")
    start = time.perf_counter()
    try:
        trainer.run()
    except KeyboardInterrupt:  # Ctrl-C: say where the last good state is, in one line
        resume = "; continue with --resume" if trainer.last_checkpoint_step is not None else ""
        if rank != 0:
            return INTERRUPTED
        print(f"\ninterrupted at step {trainer.step}: {trainer.last_checkpoint_note()}{resume}", file=sys.stderr)
        return INTERRUPTED
    if rank != 0:  # the samples are rank 0's to write
        return 0
    print(f"trained to step {trainer.step} in {time.perf_counter() - start:.1f} s; "
          f"final validation loss {trainer.final_val_loss:.4f}")
    if checkpoint:
        print(f"checkpoint: {checkpoint}")

    model.eval()
    prompt = tokenizer.encode(args.prompt)
    for i in range(args.samples):
        out = generate(model, prompt, max_new_tokens=args.sample_tokens, temperature=0.8, top_k=40, seed=i)
        print(f"---- sample {i + 1} ----")
        print(tokenizer.decode(out[0]))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
