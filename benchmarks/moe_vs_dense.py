"""A mixture of experts against the dense GPT with the same expert width, on the default corpus, over seeds.

Both models are nanoGPT's CPU baby GPT (context 64, batch 12, 4 layers, 4 heads, width 128, lr 1e-3 with 100
warmup steps and cosine decay to 1e-4, AdamW, clipping 1.0, no dropout, biases, tied embeddings); the dense one
has a feed-forward of width 4 C = 512, the MoE one ``--experts`` experts of width 512 each, ``--top-k`` per token
(GPTConfig.preset("moe"): Mixtral's router, capacity factor 1.25 in training, load-balancing coefficient 0.01).
So the MoE model has about E times the feed-forward parameters and k times its compute per token.

Each run prints, measured after training on the whole validation split (every non-overlapping 64-character
window, eval mode, no sampling noise):
    val CE          the cross-entropy (the MoE's auxiliary losses are not in it)
    experts L0..    per layer, each expert's share of the router's assignments (the issue's target: 10-40%)
    aux             per layer, the load-balancing loss E sum_i f_i P_i (1.0 when balanced; target <= 1.2)
    dropped         per layer, the share of assignments capacity drops in training mode, on one batch
and the summary compares each seed's MoE with its dense model (target: within 0.03).

    python benchmarks/moe_vs_dense.py                        # 2 seeds, 1000 steps each
    python benchmarks/moe_vs_dense.py --iters 2000 --seeds 1337,1338,1339 --experts 8 --top-k 2

Uses ../shared/data/tinyshakespeare.txt when it is there; otherwise --data, or Python standard-library text.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

# the baby GPT's shape, its corpus and its whole-split validation windows: those of baby_gpt_loss.py, beside this
# script (the dense side of this comparison is that benchmark's model)
from baby_gpt_loss import B, C, H, L, T, read_char_corpus, whole_split_windows  # noqa: E402


def run(kind: str, args, train_ids, val_ids, vocab: int, seed: int) -> dict:
    from npformer import backend
    from npformer.kernels.cpu import keep_host_memory
    from npformer.models import GPT, GPTConfig
    from npformer.train.trainer import TrainConfig, Trainer

    keep_host_memory()
    shape = dict(vocab_size=vocab, block_size=T, n_layer=L, n_head=H, n_embd=C, dropout=0.0, seed=seed)
    if kind == "moe":
        config = GPTConfig.preset("moe", n_experts=args.experts, top_k=args.top_k, router=args.router,
                                  capacity_factor=args.capacity_factor or None, **shape)
    else:
        config = GPTConfig.preset("gpt2-style", **shape)
    model = GPT(config)
    cfg = TrainConfig(max_iters=args.iters, batch_size=B, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                      eval_interval=args.iters, eval_iters=20, log_interval=args.iters, seed=seed, quiet=True,
                      workers=args.workers)
    trainer = Trainer(model, cfg, train_ids, val_ids)
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    model.eval()
    xs, ys = whole_split_windows(val_ids)
    total, stats = 0.0, []
    for i in range(0, len(xs), 64):
        total += backend.to_float(model.loss(xs[i:i + 64], ys[i:i + 64])) * len(xs[i:i + 64])
        if kind == "moe":
            stats.append(model.expert_stats() * len(xs[i:i + 64]))
    out = dict(val=total / len(xs), wall=wall, params=model.num_parameters())
    if kind == "moe":
        mean = np.sum(stats, axis=0) / len(xs)  # (L, E + 2): shares, aux, dropped (0 in eval)
        out.update(shares=mean[:, :-2], aux=mean[:, -2])
        model.train()  # what capacity drops in training, on one batch of B validation windows
        model.loss(xs[:B], ys[:B])
        out["dropped"] = model.expert_stats()[:, -1]
        model.drop_caches()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--seeds", default="1337,1338")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--router", default="mixtral", choices=["mixtral", "switch"])
    ap.add_argument("--capacity-factor", type=float, default=1.25, help="0: no capacity limit")
    ap.add_argument("--workers", type=int, default=None, help="data-parallel workers (default: one per core)")
    ap.add_argument("--data", help="text file (default: tinyshakespeare from ../shared/data when it is there)")
    args = ap.parse_args()
    if args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")

    path, tokenizer, train_ids, val_ids = read_char_corpus(args.data)
    print(f"data: {path or 'Python standard-library source (no tinyshakespeare here)'}, vocabulary "
          f"{tokenizer.vocab_size} | {args.iters} steps of {B} x {T} | MoE: {args.experts} experts of width {4 * C}, "
          f"top-{args.top_k}, router {args.router}, capacity factor {args.capacity_factor or 'none'}", flush=True)
    results = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for kind in ("dense", "moe"):
            r = run(kind, args, train_ids, val_ids, tokenizer.vocab_size, seed)
            results[kind, seed] = r
            line = f"{kind:<5} seed {seed} | {r['params']:,} params | val CE {r['val']:.4f} | {r['wall']:.0f} s"
            if kind == "moe":
                shares = " ".join(f"L{i} " + "/".join(f"{100 * f:.1f}" for f in row) + "%"
                                  for i, row in enumerate(r["shares"]))
                line += f" | experts {shares} | aux " + "/".join(f"{a:.3f}" for a in r["aux"])
                line += " | dropped in training mode " + "/".join(f"{100 * d:.1f}" for d in r["dropped"]) + "%"
            print(line, flush=True)
    print("summary (MoE - dense val CE per seed; expert shares over all layers; worst layer's aux):")
    for seed in sorted({s for _, s in results}):
        moe, dense = results["moe", seed], results["dense", seed]
        diff = moe["val"] - dense["val"]
        lo, hi = float(moe["shares"].min()), float(moe["shares"].max())
        worst = float(moe["aux"].max())
        print(f"  seed {seed}: MoE {moe['val']:.4f} dense {dense['val']:.4f} diff {diff:+.4f} "
              f"[{'within' if abs(diff) <= 0.03 else 'NOT within'} 0.03] | shares {100 * lo:.1f}-{100 * hi:.1f}% "
              f"[{'in' if 0.10 <= lo and hi <= 0.40 else 'NOT in'} 10-40%] | max aux {worst:.3f} "
              f"[{'<=' if worst <= 1.2 else 'NOT <='} 1.2]")


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
