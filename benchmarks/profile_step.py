"""cProfile of npformer training steps (forward, backward, clipping, AdamW; float32), top functions by own time.

    python benchmarks/profile_step.py --config baby --steps 20
    python benchmarks/profile_step.py --config shakespeare_char --steps 3 --sort cumulative
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from train_step import CONFIGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--config", default="baby", choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    ap.add_argument("--loss-chunk", type=int, default=0)
    ap.add_argument("--attn-impl", choices=["plain", "flash"], default="plain")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads (1: CPU time then measures work, robust to other processes on the machine)")
    ap.add_argument("--release-memory", action="store_true",
                    help="skip keep_host_memory() (freed memory goes back to the OS: page faults each step)")
    ap.add_argument("--wall", action="store_true", help="profile wall-clock time instead of this process's CPU time")
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.blas_threads)

    import numpy as np

    from npformer import backend
    from npformer.kernels.cpu import keep_host_memory
    from npformer.models import GPT, GPTConfig
    from npformer.train.optim import AdamW, clip_grad_norm, param_groups

    if not args.release_memory:
        keep_host_memory()
    cfg = dict(CONFIGS[args.config])
    B = cfg.pop("batch_size")
    model = GPT(GPTConfig(**cfg, loss_chunk=args.loss_chunk, attn_impl=args.attn_impl))
    opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(0)
    T, V = cfg["block_size"], cfg["vocab_size"]
    x = backend.asarray(rng.integers(0, V, size=(B, T)))
    y = backend.asarray(rng.integers(0, V, size=(B, T)))
    params = model.parameters()

    def step():
        model.zero_grad()
        loss = model.loss(x, y)
        model.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        return loss

    for _ in range(2):
        step()
    timer = time.perf_counter if args.wall else time.process_time
    prof = cProfile.Profile(timer)
    t0 = timer()
    prof.enable()
    for _ in range(args.steps):
        step()
    prof.disable()
    dt = (timer() - t0) / args.steps
    clock = "wall" if args.wall else "CPU"
    print(f"{args.config}: {dt * 1e3:.1f} ms {clock} time/step under the profiler ({args.steps} steps, "
          f"{args.blas_threads} BLAS threads)")
    pstats.Stats(prof).strip_dirs().sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
