"""python -m npformer.size: the size of a model, as a table or as JSON.

    python -m npformer.size gpt2                                  # a named model (--list shows them)
    python -m npformer.size gpt2 gpt2-xl mixtral-8x7b             # several, one after another
    python -m npformer.size --hf-config path/to/config.json      # a Hugging Face config
    python -m npformer.size --checkpoint out/train_char/ckpt.npz # the model a checkpoint holds
    python -m npformer.size --npformer-config my_config.json     # an npformer config's to_dict() as JSON
    python -m npformer.size llama-2-7b --batch-size 8 --context 4096 --dtype bfloat16 --json

A mistake (an unknown model, a file that is not a config) is one line "error: ..." and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..train.checkpoint import load_checkpoint
from ..train.cli import add_debug_flag, run_script
from .counting import DTYPE_BYTES
from .hf_configs import MODEL_TYPES, read_hf_config
from .npformer_configs import config_from_dict, shape_of
from .presets import PRESET_NAMES, preset_shape
from .report import format_report, size_report


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m npformer.size", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL", help="named models (see --list)")
    p.add_argument("--hf-config", action="append", default=[], metavar="PATH",
                   help=f"a Hugging Face config.json (model types: {', '.join(MODEL_TYPES)})")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH", help="an npformer checkpoint")
    p.add_argument("--npformer-config", action="append", default=[], metavar="PATH",
                   help="a JSON file holding an npformer config (GPTConfig, EncoderConfig, EncoderDecoderConfig)")
    p.add_argument("--batch-size", type=int, default=1, help="B of the training memory (default: 1)")
    p.add_argument("--context", type=int, default=None,
                   help="T: tokens per sequence (default: the model's longest context, else 2048)")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="float32",
                   help="of parameters, gradients, optimizer state and activations (default: float32)")
    p.add_argument("--kv-dtype", choices=sorted(DTYPE_BYTES), default=None,
                   help="of the KV cache (default: --dtype)")
    p.add_argument("--json", action="store_true", help="one JSON object per model, one per line")
    p.add_argument("--list", action="store_true", help="list the named models")
    add_debug_flag(p)
    return p.parse_args(argv)


def _checkpoint_shape(path: str):
    meta = load_checkpoint(path).meta
    if "config" not in meta:
        raise ValueError(f"{path!r}: the checkpoint has no 'config' entry")
    shape = shape_of(config_from_dict(meta["config"], where=f"{path!r}: config"))
    return dataclasses.replace(shape, name=path)


def _npformer_config_shape(path: str):
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path!r}: not a JSON file ({exc})") from None
    shape = shape_of(config_from_dict(d, where=repr(path)))
    return dataclasses.replace(shape, name=path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(PRESET_NAMES))
        return 0
    shapes = [preset_shape(name) for name in args.models]
    shapes += [read_hf_config(path) for path in args.hf_config]
    shapes += [_checkpoint_shape(path) for path in args.checkpoint]
    shapes += [_npformer_config_shape(path) for path in args.npformer_config]
    if not shapes:
        raise ValueError("name a model (--list shows the named ones), or give --hf-config, --checkpoint or "
                         "--npformer-config")
    for i, shape in enumerate(shapes):
        report = size_report(shape, batch_size=args.batch_size, context=args.context, dtype=args.dtype,
                             kv_dtype=args.kv_dtype)
        if args.json:
            print(json.dumps(report))
        else:
            print(("\n" if i else "") + format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
