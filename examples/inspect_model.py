"""See inside a model trained by examples/train_char.py: its attention heads on a text, what each head does, the
masks attention applies, its positional encodings, the activations around each LayerNorm, and how the gradient
flowed while it trained. Needs matplotlib (pip install 'npformer[plot]'). (Not named inspect.py: a script of that
name would stand in for the standard library's inspect module for every other script in this folder.)

    python examples/inspect_model.py --checkpoint out/train_char/ckpt.npz --text "def main():"
    python examples/inspect_model.py --only attention,heads --out-dir pictures/
    python examples/inspect_model.py --backend cupy      # the forward on a GPU (the pictures are drawn on the host)

Writes PNGs to --out-dir (default: an "inspect" folder beside the checkpoint) and prints the per-head table:
    attention.png            layers x heads heatmaps of the text, tokens on the axes
    heads.png                entropy, attended distance, previous-/first-token weight per head
    masks.png                causal, padding, causal + padding and cross-attention masks
    positions.png            the sinusoidal table
    position_similarity.png  position dot products: sinusoidal, the checkpoint's learned table, RoPE (with the
                             check that RoPE's score depends only on the offset)
    norms.png                activations before and after every norm, per layer
    gradient_flow.png        per-layer gradient norms and update-to-parameter ratios over training
"""

from __future__ import annotations

import argparse
import os
import sys

PICTURES = ("attention", "heads", "masks", "positions", "norms", "gradient-flow")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/train_char/ckpt.npz", help="(default: %(default)s)")
    p.add_argument("--text", default="def main():", help="the text whose attention is drawn (default: %(default)r)")
    p.add_argument("--out-dir", default=None, help="where the PNGs go (default: CHECKPOINT's folder/inspect)")
    p.add_argument("--only", default=",".join(PICTURES), help=f"comma-separated, from {', '.join(PICTURES)}")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=os.environ.get("NPFORMER_BACKEND", "numpy"))
    p.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np

    import npformer
    from npformer.inspect import capture_forward, format_head_table, head_summary, plots, positions
    from npformer.inspect.figures import MissingPlotExtra, require_matplotlib
    from npformer.train.cli import USAGE_ERROR
    from npformer.train.saved_models import load_gpt

    args = parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(PICTURES))
    if unknown:
        raise ValueError(f"--only: unknown picture(s) {', '.join(unknown)}; choose from {', '.join(PICTURES)}")
    try:
        require_matplotlib()
    except MissingPlotExtra as exc:  # one line, exit code 2, like every other mistake
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    npformer.set_backend(args.backend)
    model, tokenizer, ckpt = load_gpt(args.checkpoint)
    config = model.config
    out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "inspect")
    ids = tokenizer.encode(args.text)[-config.block_size:]  # the context window's worth
    if len(ids) < 2:
        raise ValueError(f"--text {args.text!r} is {len(ids)} token(s); give at least 2")
    tokens = [tokenizer.decode([int(i)]) for i in ids]
    print(f"model: {args.checkpoint} (step {ckpt.meta.get('step', '?')}), {model.num_parameters():,} parameters, "
          f"{config.n_layer} layers x {config.n_head} heads, positions {config.positions}")
    print(f"text: {len(ids)} tokens {''.join(tokens)!r}")

    cap = capture_forward(model, np.asarray(ids, dtype=np.int64)[None, :])  # one forward: attention and activations
    maps, blocks = cap.attention["decoder"], cap.blocks["decoder"]
    written = []

    def out(name):
        path = os.path.join(out_dir, name)
        written.append(path)
        return path

    if "attention" in wanted:
        plots.plot_attention(maps, out("attention.png"), tokens, title=f"attention on {args.text!r}")
    if "heads" in wanted:
        summary = head_summary(maps)
        print(format_head_table(summary))
        plots.plot_head_summary(summary, out("heads.png"))
    if "masks" in wanted:
        plots.plot_masks(out("masks.png"))
    if "positions" in wanted:
        positions.plot_sinusoidal_table(out("positions.png"), T=config.block_size, C=config.n_embd)
        learned = npformer.to_numpy(model.wpe.weight.data) if model.wpe is not None else None
        positions.plot_position_similarity(out("position_similarity.png"), T=config.block_size, C=config.n_embd,
                                           learned=learned, head_dim=config.head_dim, rope_base=config.rope_base)
    if "norms" in wanted:
        plots.plot_norm_histograms(blocks, out("norms.png"), title=f"before and after each norm, on {args.text!r}")
    if "gradient-flow" in wanted:
        rows = ckpt.meta.get("gradient_flow") or []
        if rows:
            plots.plot_gradient_flow(rows, out("gradient_flow.png"), title=f"training of {args.checkpoint}")
        else:
            print("note: the checkpoint holds no gradient-flow records (written before the trainer kept them); "
                  "no gradient_flow.png")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is
    from npformer.train.checkpoint import CheckpointError
    from npformer.train.cli import run_script

    sys.exit(run_script(main, hints={CheckpointError: "(train a model first: python examples/train_char.py)"}))
