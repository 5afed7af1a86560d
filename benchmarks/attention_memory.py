"""Time and peak memory of attention forward + backward: the plain path against the tiled (flash) path.

    python benchmarks/attention_memory.py            # T = 512 ... 8192, B=1, H=4, D=64, float32, causal
    python benchmarks/attention_memory.py --quick    # T = 512, 1024, 2048: a few seconds

Peak memory is measured with tracemalloc: NumPy reports every array buffer it allocates to tracemalloc, so the
peak of traced memory during forward + backward (minus what was allocated before: q, k, v, dout) is the working
memory of the attention call itself, caches and gradients included. Python objects are traced too, but are
negligible here. (On the CuPy backend the numbers would not mean anything: this benchmark is for NumPy.)
The plain path keeps the (B, H, T, T) probabilities and needs another such array for dP in backward, so it is
skipped where that estimate passes --limit-gb.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from npformer.functional.attention import attention_backward, attention_forward
from npformer.functional.flash_attention import flash_attention_backward, flash_attention_forward


def plain_estimate_bytes(B, H, T, itemsize):
    """P and dP (B, H, T, T) in the dtype, plus the (T, T) boolean causal masks."""
    return 2 * B * H * T * T * itemsize + 2 * T * T


def measure(forward, backward, q, k, v, dout, repeat=1, **options):
    """Run forward + backward under tracemalloc; return (best seconds, peak bytes above the start, out)."""
    seconds = []
    for _ in range(max(repeat, 1) - 1):  # untraced runs, for the time only
        t0 = time.perf_counter()
        out, cache = forward(q, k, v, **options)
        backward(dout, cache)
        seconds.append(time.perf_counter() - t0)
        del out, cache
    tracemalloc.start()
    start_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out, cache = forward(q, k, v, **options)
    grads = backward(dout, cache)
    seconds.append(time.perf_counter() - t0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del cache, grads
    return min(seconds), peak - start_bytes, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument("--quick", action="store_true", help="only T = 512, 1024, 2048")
    parser.add_argument("--T", type=int, nargs="+", default=None, help="context lengths (overrides --quick)")
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--block", type=int, default=128, help="block_q = block_k of the flash path")
    parser.add_argument("--not-causal", action="store_true", help="full (bidirectional) attention")
    parser.add_argument("--limit-gb", type=float, default=8.0, help="skip the plain path above this estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="time = best of this many runs (memory: the first)")
    args = parser.parse_args(argv)
    Ts = args.T or ([512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192])
    causal = not args.not_causal
    B, H, D = args.B, args.H, args.D
    print(f"attention forward+backward, B={B} H={H} D={D} float32 causal={causal} block={args.block}; "
          f"time = best of {args.repeat}; peak = tracemalloc peak above inputs")
    print(f"{'T':>6} | {'plain s':>8} {'plain MiB':>10} | {'flash s':>8} {'flash MiB':>10} | "
          f"{'mem ratio':>9} {'max |out diff|':>14}")
    rng = np.random.default_rng(args.seed)
    warm = [rng.standard_normal((B, H, 256, D), dtype=np.float32) for _ in range(4)]  # first-call costs
    measure(attention_forward, attention_backward, *warm, causal=causal)
    measure(flash_attention_forward, flash_attention_backward, *warm, causal=causal)
    for T in Ts:
        q, k, v, dout = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(4))
        if plain_estimate_bytes(B, H, T, 4) > args.limit_gb * 2**30:
            plain = None
        else:
            plain = measure(attention_forward, attention_backward, q, k, v, dout, args.repeat, causal=causal)
        flash = measure(flash_attention_forward, flash_attention_backward, q, k, v, dout, args.repeat,
                        causal=causal, block_q=args.block, block_k=args.block)
        mib = 2.0**20
        if plain is None:
            plain_cols = f"{'skipped':>8} {'(> limit)':>10}"
            ratio, diff = "", ""
        else:
            plain_cols = f"{plain[0]:8.3f} {plain[1] / mib:10.1f}"
            ratio = f"{plain[1] / flash[1]:8.1f}x"
            diff = f"{float(np.max(np.abs(plain[2] - flash[2]))):14.2e}"
        print(f"{T:>6} | {plain_cols} | {flash[0]:8.3f} {flash[1] / mib:10.1f} | {ratio:>9} {diff:>14}", flush=True)
        del plain, flash


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
