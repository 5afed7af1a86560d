"""Write text with a model trained by examples/train_char.py or examples/finetune.py, or with a pretrained GPT-2
or Llama from its Hugging Face files.

    python examples/sample.py                                     # 3 samples from out/train_char/ckpt.npz
    python examples/sample.py --hf path/to/gpt2 --prompt "The meaning of life is"   # config.json + safetensors
    python examples/sample.py --checkpoint out/finetune/ckpt.npz  # a fine-tuned GPT-2 and its BPE tokenizer
    python examples/sample.py --prompt "def " --max-new-tokens 500 --temperature 0.6
    python examples/sample.py --temperature 0                      # greedy: the most likely text
    python examples/sample.py --top-k 0 --top-p 0.9                # nucleus sampling instead of top-k
    python examples/sample.py --no-cache                           # re-encode the window for every token (slower)
    python examples/sample.py --backend cupy                       # on a GPU

The checkpoint holds the model's config, the tokenizer and the parameters; a --hf directory holds config.json,
model.safetensors (or shards) and the tokenizer's files (tokenizer.json, or vocab.json + merges.txt), read with
NumPy alone. Sample i uses seed --seed + i.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is

import npformer  # noqa: E402
from npformer.data import BPETokenizer  # noqa: E402
from npformer.decode.generate import generate  # noqa: E402
from npformer.models import GPT  # noqa: E402
from npformer.train.checkpoint import CheckpointError  # noqa: E402
from npformer.train.cli import add_debug_flag, run_script  # noqa: E402
from npformer.train.saved_models import load_gpt  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/train_char/ckpt.npz", help="(default: %(default)s)")
    p.add_argument("--hf", metavar="DIR", help="a Hugging Face model directory (gpt2, llama, mistral) instead of a "
                   "checkpoint")
    p.add_argument("--prompt", default="\n", help="text the samples start from (default: a newline)")
    p.add_argument("--num-samples", type=int, default=3, help="(default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=300, help="tokens per sample (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens; 0 = off (default: 40)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep probability mass p")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (default: %(default)s)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=os.environ.get("NPFORMER_BACKEND", "numpy"))
    p.add_argument("--no-cache", action="store_true", help="decode without the key/value cache")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    npformer.set_backend(args.backend)
    if args.hf:
        tokenizer = BPETokenizer.from_pretrained(args.hf)  # first: it fails fast where the weights take a while
        model = GPT.from_pretrained(args.hf)
        source = f"{args.hf} ({model.config.extra['hf']['config']['model_type']})"
    else:
        model, tokenizer, ckpt = load_gpt(args.checkpoint)  # every entry checked: a bad one names itself
        source = f"{args.checkpoint} (step {ckpt.meta.get('step', '?')})"
    config = model.config
    print(f"model: {source}, {model.num_parameters():,} parameters, "
          f"context {config.block_size}, positions {config.positions}, backend {args.backend}")

    prompt = tokenizer.encode(args.prompt)
    if len(prompt) == 0:
        raise ValueError("the prompt is empty; give at least one character")
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}")
    total_tokens, start = 0, time.perf_counter()
    for i in range(args.num_samples):
        out = generate(model, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k or None, top_p=args.top_p, seed=args.seed + i, use_cache=not args.no_cache)
        total_tokens += len(out[0]) - len(prompt)
        print(f"---- sample {i + 1} ----")
        print(tokenizer.decode(out[0]))
    seconds = time.perf_counter() - start
    print(f"---- {total_tokens} tokens in {seconds:.2f} s ({total_tokens / max(seconds, 1e-9):,.0f} tokens/s, "
          f"{'no cache' if args.no_cache else 'key/value cache'}) ----")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main, hints={CheckpointError: "(train a model first: python examples/train_char.py)"}))
