"""Generation speed with and without the key/value cache, and the cache's memory.

Model: nanoGPT's shakespeare_char config (V=65, block_size 256, 6 layers, 6 heads, width 384), random weights,
float32. One 1-token prompt (batch 1) continued by 256 tokens, sampled at temperature 0.8, top-k 40, seed 0.

Without the cache every token re-encodes the whole prefix: token t costs a forward over t positions (a full
forward over up to 256 positions), so the run does ~T^2/2 position-forwards. With the cache the prompt is encoded
once and each token runs one position, attending over the cached keys and values.

    python benchmarks/generate.py
    python benchmarks/generate.py --tokens 128 --batch-size 4
    python benchmarks/generate.py --backend cupy
    OPENBLAS_NUM_THREADS=1 python benchmarks/generate.py

Cached decoding is matrix-vector work (one position): on a machine whose cores are busy with other work, BLAS
threads spin waiting for each other and a (1, 384) @ (384, 1536) product can take 50x longer than on one
thread, so compare with OPENBLAS_NUM_THREADS=1 there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import npformer  # noqa: E402
from npformer.decode.generate import generate  # noqa: E402
from npformer.decode.kv_cache import KVCache, kv_cache_nbytes, make_kv_caches  # noqa: E402
from npformer.models import GPT, GPTConfig  # noqa: E402

SHAKESPEARE_CHAR = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)


def timed_generate(model, prompt, tokens: int, use_cache: bool):
    start = time.perf_counter()
    out = generate(model, prompt, max_new_tokens=tokens, temperature=0.8, top_k=40, seed=0, use_cache=use_cache)
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--tokens", type=int, default=256, help="tokens generated per sequence (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    args = ap.parse_args(argv)
    npformer.set_backend(args.backend)

    config = GPTConfig(**SHAKESPEARE_CHAR)
    model = GPT(config)
    B, W = args.batch_size, config.block_size
    prompt = np.zeros((B, 1), dtype=np.int64)
    print(f"generation benchmark | shakespeare_char config, {model.num_parameters():,} parameters, float32 | "
          f"backend {args.backend} | {os.cpu_count()} cores")
    print(f"prompt 1 token, batch {B}, {args.tokens} new tokens, temperature 0.8, top-k 40, seed 0")
    generate(model, prompt, max_new_tokens=4, seed=0)  # warm-up (first calls allocate)

    t_cache, out_cache = timed_generate(model, prompt, args.tokens, use_cache=True)
    t_plain, out_plain = timed_generate(model, prompt, args.tokens, use_cache=False)
    n = B * args.tokens
    print()
    print(f"{'mode':<22} {'seconds':>9} {'tokens/s':>10} {'ms/token':>9} {'speed-up':>9}")
    print(f"{'key/value cache':<22} {t_cache:>9.2f} {n / t_cache:>10.1f} {1e3 * t_cache / args.tokens:>9.2f} "
          f"{t_plain / t_cache:>8.1f}x")
    print(f"{'no cache (re-encode)':<22} {t_plain:>9.2f} {n / t_plain:>10.1f} {1e3 * t_plain / args.tokens:>9.2f} "
          f"{1.0:>8.1f}x")
    same = all(np.array_equal(a, b) for a, b in zip(out_cache, out_plain))
    print(f"same tokens with and without the cache: {'yes' if same else 'no (float32 rounding near a draw)'}")

    # memory: one cache per layer, (k, v) x (B, Hkv, block_size, D) float32
    print()
    print(f"{'cache memory (B=' + str(B) + ', ' + str(W) + ' positions)':<40} {'MiB':>8} {'vs MHA':>8}")
    mha = kv_cache_nbytes(make_kv_caches(model, B, W))
    for label, hkv in (("multi-head (Hkv = 6)", 6), ("grouped-query (Hkv = 3)", 3), ("multi-query (Hkv = 1)", 1)):
        nbytes = sum(KVCache(B, hkv, W, config.head_dim, dtype="float32").nbytes for _ in range(config.n_layer))
        print(f"{label:<40} {nbytes / 2**20:>8.2f} {nbytes / mha:>7.2f}x")
    params_mib = sum(p.data.nbytes for p in model.parameters()) / 2**20
    print(f"(for scale: the parameters take {params_mib:.1f} MiB)")


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
