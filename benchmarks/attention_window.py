"""Sliding-window attention: time and peak memory of forward + backward grow linearly in T at a fixed window W,
where full causal attention grows as T^2. Both window paths: the flash path (reference tier, tiles outside every
window skipped) and the fast tier's row blocks (P kept as a band); full causal attention alongside.

    python benchmarks/attention_window.py              # T = 512 ... 8192, W = 256, B=1, H=4, D=64, float32
    python benchmarks/attention_window.py --quick      # T = 512, 1024, 2048
    python benchmarks/attention_window.py --window 128 --T 1024 4096

Columns: seconds (best of --repeat) and peak MiB (tracemalloc peak above the inputs, as in attention_memory.py:
NumPy reports its buffers to tracemalloc) of each path; "us/query" is the window flash time per query, which
stays flat when the cost is linear in T. Full causal paths are skipped where their estimate passes --limit-gb
(the row-block tier keeps two (B, H, T, T) arrays). NumPy only: CuPy memory is not traced.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from npformer.functional.flash_attention import flash_attention_backward, flash_attention_forward
from npformer.kernels.attention import attention_backward as rows_backward
from npformer.kernels.attention import attention_forward as rows_forward


def measure(forward, backward, q, k, v, dout, repeat=1, **options):
    """Run forward + backward (untraced for the time, then once traced); return (best s, peak bytes, out)."""
    seconds = []
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        out, cache = forward(q, k, v, **options)
        backward(dout, cache)
        seconds.append(time.perf_counter() - t0)
        del out, cache
    tracemalloc.start()
    start_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    out, cache = forward(q, k, v, **options)
    grads = backward(dout, cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del cache, grads
    return min(seconds), peak - start_bytes, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument("--quick", action="store_true", help="only T = 512, 1024, 2048")
    parser.add_argument("--T", type=int, nargs="+", default=None, help="context lengths (overrides --quick)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--block", type=int, default=128, help="block_q = block_k of the flash path")
    parser.add_argument("--limit-gb", type=float, default=1.5, help="skip a full causal path above this estimate")
    parser.add_argument("--no-full", action="store_true", help="window paths only")
    parser.add_argument("--repeat", type=int, default=2, help="time = best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    Ts = args.T or ([512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192])
    for name in ("window", "B", "H", "D", "block", "repeat"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if min(Ts) < 1:
        raise ValueError(f"--T values must be positive, got {Ts}")
    B, H, D, W = args.B, args.H, args.D, args.window
    print(f"attention forward+backward, B={B} H={H} D={D} float32 causal, window W={W}, flash blocks "
          f"{args.block}; time = best of {args.repeat}; MiB = tracemalloc peak above the inputs")
    print(f"{'T':>6} | {'flash+W s':>9} {'MiB':>7} {'us/query':>8} | {'rows+W s':>8} {'MiB':>7} | "
          f"{'flash s':>8} {'MiB':>7} | {'rows s':>8} {'MiB':>7} | {'|diff|':>8}")
    rng = np.random.default_rng(args.seed)
    warm = [rng.standard_normal((B, H, 256, D), dtype=np.float32) for _ in range(4)]  # first-call costs
    measure(flash_attention_forward, flash_attention_backward, *warm, causal=True, window=W)
    measure(rows_forward, rows_backward, *warm, causal=True, window=W)
    mib = 2.0**20

    def cols(result, width=8):
        return f"{'skipped':>{width}} {'':>7}" if result is None else f"{result[0]:{width}.3f} {result[1] / mib:7.1f}"

    for T in Ts:
        q, k, v, dout = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(4))
        blocks = dict(block_q=args.block, block_k=args.block)
        flash_w = measure(flash_attention_forward, flash_attention_backward, q, k, v, dout, args.repeat,
                          causal=True, window=W, **blocks)
        rows_w = measure(rows_forward, rows_backward, q, k, v, dout, args.repeat, causal=True, window=W)
        flash_full = rows_full = None
        if not args.no_full:
            # the flash path's memory is linear anyway; its time is the T^2 to compare with
            flash_full = measure(flash_attention_forward, flash_attention_backward, q, k, v, dout, 1, causal=True,
                                 **blocks)
            if 2 * B * H * T * T * 4 <= args.limit_gb * 2**30:  # P and dS, (B, H, T, T) float32 each
                rows_full = measure(rows_forward, rows_backward, q, k, v, dout, 1, causal=True)
        diff = float(np.max(np.abs(flash_w[2] - rows_w[2])))
        print(f"{T:>6} | {cols(flash_w, 9)} {flash_w[0] / T * 1e6:8.1f} | {cols(rows_w)} | {cols(flash_full)} | "
              f"{cols(rows_full)} | {diff:8.1e}", flush=True)
        del flash_w, rows_w, flash_full, rows_full


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(main))
