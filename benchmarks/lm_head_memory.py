"""Peak memory and time of the LM head + cross-entropy, forward + backward: plain (linear, then cross_entropy)
against the fused, chunked path (lm_head_cross_entropy_forward/backward), at a large vocabulary.

    python benchmarks/lm_head_memory.py                      # V=50257, C=768, N=256 tokens, float32
    python benchmarks/lm_head_memory.py --N 256 2048 --chunk 128

Peak memory is measured with tracemalloc (NumPy reports every array buffer to it): the peak of traced memory during
forward + backward above what existed before (x, w, targets), so it counts logits, dlogits, temporaries, dx and
dw. dw (C, V) itself is C x V x 4 bytes in both paths (147 MiB at GPT-2 size); the difference is the (N, V)
logits and dlogits, which the fused path never holds whole.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npformer import functional as F  # noqa: E402


def plain(x, w, t):
    logits, lin_cache = F.linear_forward(x, w)
    loss, ce_cache = F.cross_entropy_forward(logits, t)
    del logits
    dlogits = F.cross_entropy_backward(1.0, ce_cache)
    del ce_cache
    dx, dw, _ = F.linear_backward(dlogits, lin_cache)
    return loss, dx, dw


def fused(x, w, t, chunk):
    loss, cache = F.lm_head_cross_entropy_forward(x, w, t, chunk=chunk)
    dx, dw = F.lm_head_cross_entropy_backward(1.0, cache)
    return loss, dx, dw


def measure(fn, *args):
    fn(*args)  # warm-up (and the result to compare)
    tracemalloc.start()
    tracemalloc.reset_peak()
    start, _ = tracemalloc.get_traced_memory()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, (peak - start) / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--V", type=int, default=50257)
    ap.add_argument("--C", type=int, default=768)
    ap.add_argument("--N", type=int, nargs="+", default=[256], help="tokens (B*T), one run each")
    ap.add_argument("--chunk", type=int, default=64, help="rows per chunk of the fused path")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((args.C, args.V)) * 0.02).astype(np.float32)
    print(f"LM head + cross-entropy, forward + backward | V={args.V} C={args.C} float32 | fused chunk={args.chunk}")
    print(f"{'N tokens':>8} {'path':<6} {'peak MiB':>9} {'ms':>8}   (dw alone: {args.C * args.V * 4 / 2**20:.0f} MiB)")
    for n in args.N:
        x = rng.standard_normal((n, args.C)).astype(np.float32)
        t = rng.integers(0, args.V, size=(n,))
        s_plain, m_plain, (loss_p, dx_p, dw_p) = measure(plain, x, w, t)
        s_fused, m_fused, (loss_f, dx_f, dw_f) = measure(fused, x, w, t, args.chunk)
        assert np.allclose(loss_p, loss_f, rtol=1e-4) and np.allclose(dx_p, dx_f, atol=1e-5)
        assert np.allclose(dw_p, dw_f, atol=1e-5)
        print(f"{n:>8} {'plain':<6} {m_plain:>9.1f} {s_plain * 1e3:>8.1f}")
        print(f"{n:>8} {'fused':<6} {m_fused:>9.1f} {s_fused * 1e3:>8.1f}   "
              f"({m_plain / m_fused:.2f}x less memory, {s_plain / s_fused:.2f}x the plain speed)", flush=True)


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
