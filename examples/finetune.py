"""Fine-tune a pretrained GPT-2 (or Llama) on your own text, from its Hugging Face files, as nanoGPT's
``init_from='gpt2'`` does: the pretrained weights and their BPE tokenizer, npformer's training loop.

    python examples/finetune.py --init-from path/to/gpt2 --data my.txt                 # a short run on 2 cores
    python examples/finetune.py --init-from path/to/gpt2 --data my.txt --resume        # continue it
    python examples/sample.py --checkpoint out/finetune/ckpt.npz --prompt "Once"       # write with the result
    python examples/export_hf.py --checkpoint out/finetune/ckpt.npz --out my-gpt2      # back to transformers

--init-from is a directory with config.json, model.safetensors (or shards) and the tokenizer's files
(tokenizer.json, or vocab.json + merges.txt). --block-size crops the context (GPT-2's learned positions keep their
first rows), which is what makes a CPU step affordable. The defaults follow nanoGPT's finetune_shakespeare config
(constant learning rate 3e-5), scaled to a CPU. Every TrainConfig field is a flag: see --help. The checkpoint
(config, the BPE tokenizer, parameters, optimizer state) lands in --out-dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is

import npformer  # noqa: E402
from npformer.data import BPETokenizer, check_long_enough, read_text, train_val_split  # noqa: E402
from npformer.decode.generate import generate  # noqa: E402
from npformer.models import GPT  # noqa: E402
from npformer.models.hf_config import gpt_config_from_hf  # noqa: E402
from npformer.models.pretrained import read_config  # noqa: E402
from npformer.train.cli import INTERRUPTED, add_dataclass_args, add_debug_flag, dataclass_from_args, run_script  # noqa: E402,E501
from npformer.train.trainer import TrainConfig, Trainer  # noqa: E402

TRAIN_DEFAULTS = dict(max_iters=100, batch_size=4, learning_rate=3e-5, min_lr=3e-5, decay_lr=False, warmup_iters=0,
                      weight_decay=0.1, eval_interval=25, eval_iters=10, log_interval=5, out_dir="out/finetune",
                      workers=None)
VAL_FRACTION = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init-from", required=True, metavar="DIR", help="a Hugging Face model directory")
    p.add_argument("--data", required=True, help="a UTF-8 text file to fine-tune on")
    p.add_argument("--block-size", type=int, default=None,
                   help="context length, cropping the pretrained one (default: 256, or less if it is shorter)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout while fine-tuning (nanoGPT: 0.0 or 0.1)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=os.environ.get("NPFORMER_BACKEND", "numpy"))
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    p.add_argument("--samples", type=int, default=1, help="samples to print at the end")
    p.add_argument("--sample-tokens", type=int, default=100, help="tokens per sample")
    p.add_argument("--prompt", default="\n", help="text the samples start from")
    add_debug_flag(p)
    add_dataclass_args(p, TrainConfig, TRAIN_DEFAULTS, title="training (TrainConfig)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    npformer.set_backend(args.backend)
    npformer.kernels.cpu.keep_host_memory()

    tokenizer = BPETokenizer.from_pretrained(args.init_from)
    block_size = args.block_size or min(256, gpt_config_from_hf(read_config(args.init_from)).block_size)
    model = GPT.from_pretrained(args.init_from, block_size=block_size, dropout=args.dropout)
    config = model.config
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{args.init_from!r}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{config.vocab_size}")
    start = time.perf_counter()
    ids = tokenizer.encode(read_text(args.data))
    check_long_enough(len(ids), config.block_size, VAL_FRACTION, repr(args.data), "tokens")
    train_ids, val_ids = train_val_split(ids, val_fraction=VAL_FRACTION)
    print(f"data: {args.data}: {len(ids):,} tokens ({time.perf_counter() - start:.1f} s to tokenize), "
          f"{len(train_ids):,} train / {len(val_ids):,} validation")
    print(f"model: {args.init_from} ({config.extra['hf']['config']['model_type']}), {model.num_parameters():,} "
          f"parameters, context {config.block_size}, backend {args.backend}")

    trainer = Trainer(model, dataclass_from_args(TrainConfig, args), train_ids, val_ids,
                      meta={"tokenizer": tokenizer.to_dict(), "init_from": os.path.abspath(args.init_from)})
    checkpoint = trainer.checkpoint_path
    if args.resume:
        if checkpoint is None:
            raise ValueError("--resume needs an --out-dir to find the checkpoint in")
        trainer.resume()
        print(f"resumed from {checkpoint} at step {trainer.step}")
    start = time.perf_counter()
    try:
        trainer.run()
    except KeyboardInterrupt:
        resume = "; continue with --resume" if trainer.last_checkpoint_step is not None else ""
        print(f"\ninterrupted at step {trainer.step}: {trainer.last_checkpoint_note()}{resume}", file=sys.stderr)
        return INTERRUPTED
    print(f"fine-tuned to step {trainer.step} in {time.perf_counter() - start:.1f} s; "
          f"final validation loss {trainer.final_val_loss:.4f}")
    if checkpoint:
        print(f"checkpoint: {checkpoint} (sample: python examples/sample.py --checkpoint {checkpoint}; "
              f"Hugging Face files: python examples/export_hf.py --checkpoint {checkpoint} --out DIR)")

    model.eval()
    prompt = tokenizer.encode(args.prompt)
    for i in range(args.samples):
        out = generate(model, prompt, max_new_tokens=args.sample_tokens, temperature=0.8, top_k=40, seed=i)
        print(f"---- sample {i + 1} ----")
        print(tokenizer.decode(out[0]))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
