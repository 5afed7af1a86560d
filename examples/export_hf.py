"""Write an npformer checkpoint as a Hugging Face model directory that transformers reads.

    python examples/export_hf.py --checkpoint out/finetune/ckpt.npz --out my-gpt2
    python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('my-gpt2')"

The model must be one transformers has (GPT-2: LayerNorm, GELU, learned positions, biases; Llama: RMSNorm,
SwiGLU, RoPE), which every model from examples/finetune.py is, and train_char.py's gpt2-style and llama-style
presets are; anything else is a one-line error naming the field. A BPE tokenizer in the checkpoint is written
too (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is

from npformer.data import BPETokenizer  # noqa: E402
from npformer.train.cli import add_debug_flag, run_script  # noqa: E402
from npformer.train.saved_models import load_gpt  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an npformer checkpoint (ckpt.npz)")
    p.add_argument("--out", required=True, metavar="DIR", help="the directory to write")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="how the weights are stored (default: %(default)s)")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model, tokenizer, ckpt = load_gpt(args.checkpoint)
    files = model.save_pretrained(args.out, dtype=args.dtype)
    if isinstance(tokenizer, BPETokenizer):
        files += tokenizer.save_pretrained(args.out)
    print(f"{args.checkpoint} (step {ckpt.meta.get('step', '?')}) -> {args.out}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
