"""Training-step throughput and peak memory: npformer (NumPy or CuPy) beside PyTorch eager, same shapes, same run.

One step = forward, backward, gradient clipping and AdamW on a (B, T) batch of random tokens, float32.
Each measurement runs in a fresh subprocess so its peak memory is its own: the figure printed is the peak
resident memory (VmHWM) minus the resident memory after imports, i.e. model + optimizer state + activations +
temporaries; with worker processes, plus what each worker's peak adds to what it shared with its parent at the
fork. Model FLOPs utilisation (MFU) = the step's FLOPs (6 x parameters x tokens + attention) / time, against this
machine's own float32 matrix-product rate measured here with NumPy.

    python benchmarks/train_step.py                  # baby and shakespeare_char configs, npformer vs torch
    python benchmarks/train_step.py --configs baby --steps 20
    python benchmarks/train_step.py --backend cupy   # on a GPU (torch then runs on CUDA too)
    python benchmarks/train_step.py --configs shakespeare_char --recompute   # + a line with recomputation
    python benchmarks/train_step.py --workers 1      # npformer without data parallelism only
    python benchmarks/train_step.py --parallel threads   # workers as threads (default: processes where possible)
    python benchmarks/train_step.py --rounds 5 --no-reference   # more interleaved rounds, no reference-tier line

Every line is measured once per round, the rounds interleaved (npformer, reference, torch, npformer, ...); the
figures are medians over rounds, and "vs torch" is the median of each round's ratio. The "reference" line is the
same npformer step on the reference tier (npformer.functional): what the fast tier buys.

npformer's child calls npformer.kernels.cpu.keep_host_memory() first (freed blocks stay in the process for reuse:
no page faults per step); torch's child runs as torch does by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

CONFIGS = {
    # nanoGPT's README "baby GPT" CPU overrides
    "baby": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, batch_size=12),
    # nanoGPT's config/train_shakespeare_char.py
    "shakespeare_char": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, batch_size=16),
}


def rss_kib(field: str, pid: int | str = "self") -> int:
    """VmRSS (current) or VmHWM (peak) of this process (or of process ``pid``), in KiB (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def step_flops(cfg: dict, n_params: int) -> float:
    """6 N per token for the matrix products of forward + backward, plus attention's 12 L T C per token."""
    tokens = cfg["batch_size"] * cfg["block_size"]
    attention = 12 * cfg["n_layer"] * cfg["block_size"] * cfg["n_embd"]
    return tokens * (6 * n_params + attention)


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate in FLOP/s (best of ``repeats``), with NumPy."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.copy()
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# -- one measurement (runs in a child process) ---------------------------------------------------------------------
def measure_npformer(cfg: dict, steps: int, warmup: int, backend_name: str, options: dict, workers: int,
                     parallel: str) -> dict:
    import numpy as np

    import npformer
    from npformer import backend
    from npformer.kernels.cpu import keep_host_memory
    from npformer.models import GPT, GPTConfig
    from npformer.parallel import data_parallel
    from npformer.train.optim import AdamW, clip_grad_norm, param_groups

    npformer.set_backend(backend_name)
    npformer.set_kernels(options.get("kernels") or "fast")  # the optimizer's step too, not only the model's ops
    keep_host_memory()  # reuse freed activations instead of faulting fresh pages in every step
    base = rss_kib("VmRSS")
    model_cfg = {k: v for k, v in cfg.items() if k != "batch_size"}
    model = GPT(GPTConfig(**model_cfg, **options))
    opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(0)
    B, T, V = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]
    batches = [(backend.asarray(rng.integers(0, V, size=(B, T))), backend.asarray(rng.integers(0, V, size=(B, T))))
               for _ in range(4)]
    params = model.parameters()
    runner = data_parallel(model, workers, parallel)  # workers=1: the model itself
    # worker processes (if any) are forks: count what each adds on top of what it shared at the fork
    worker_base = {proc.pid: rss_kib("VmRSS", proc.pid) for proc in getattr(runner, "_procs", [])}

    def step(i):
        x, y = batches[i % 4]
        model.zero_grad()
        loss = runner.loss(x, y)
        runner.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    sync = (lambda: backend.xp().cuda.Device().synchronize()) if backend_name == "cupy" else (lambda: None)
    sync()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step(i)
        backend.to_float(loss)
        sync()
        times.append(time.perf_counter() - t0)
    workers_kib = sum(rss_kib("VmHWM", pid) - kib for pid, kib in worker_base.items())
    result = dict(n_params=model.num_parameters(), step_s=float(np.median(times)),
                  peak_mib=(rss_kib("VmHWM") - base + workers_kib) / 1024)
    if backend_name == "cupy":
        pool = backend.xp().get_default_memory_pool()
        result["gpu_peak_mib"] = pool.total_bytes() / 2**20
    return result


def measure_torch(cfg: dict, steps: int, warmup: int, device: str, threads: int) -> dict:
    import numpy as np
    import torch

    from tests.torch_gpt import TorchGPT

    torch.set_num_threads(threads)
    base = rss_kib("VmRSS")
    model_cfg = {k: v for k, v in cfg.items() if k != "batch_size"}
    model = TorchGPT(**model_cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(0)
    B, T, V = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]
    batches = [(torch.from_numpy(rng.integers(0, V, size=(B, T))).to(device),
                torch.from_numpy(rng.integers(0, V, size=(B, T))).to(device)) for _ in range(4)]

    def step(i):
        x, y = batches[i % 4]
        opt.zero_grad(set_to_none=True)
        loss, _ = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i in range(warmup):
        step(i)
    sync()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i).item()
        sync()
        times.append(time.perf_counter() - t0)
    result = dict(n_params=sum(p.numel() for p in model.parameters()), step_s=float(np.median(times)),
                  peak_mib=(rss_kib("VmHWM") - base) / 1024)
    if device == "cuda":
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_child(kind: str, config: str, args, options: dict, workers: int = 1) -> dict | None:
    payload = json.dumps(dict(kind=kind, config=config, steps=args.steps, warmup=args.warmup,
                              backend=args.backend, threads=args.threads, options=options, workers=workers,
                              parallel=args.parallel))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", payload], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(f"  {kind} {config} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(payload: str) -> None:
    p = json.loads(payload)
    cfg = CONFIGS[p["config"]]
    if p["kind"] == "npformer":
        out = measure_npformer(cfg, p["steps"], p["warmup"], p["backend"], p["options"], p["workers"],
                               p["parallel"])
    else:
        out = measure_torch(cfg, p["steps"], p["warmup"], "cuda" if p["backend"] == "cupy" else "cpu", p["threads"])
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--configs", default="baby,shakespeare_char", help=f"comma-separated, from {list(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (numpy: its BLAS default)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--workers", type=int, default=None,
                    help="npformer: model replicas, one thread and one BLAS thread each (npformer.parallel."
                         "DataParallel); default: one per core on numpy, 1 on cupy. With more than one, a second "
                         "npformer line shows the same step with 1 worker (the model alone, BLAS on every core)")
    ap.add_argument("--parallel", choices=["auto", "threads", "processes"], default="auto",
                    help="npformer's workers as threads or processes (auto: processes where they can fork)")
    ap.add_argument("--attn-impl", choices=["plain", "flash"], default="plain")
    ap.add_argument("--loss-chunk", type=int, default=0, help="fused LM head + loss over chunks of N tokens")
    ap.add_argument("--recompute", action="store_true",
                    help="also run npformer with activation recomputation (each block's forward redone in backward) "
                         "and print its line below the plain one: the memory it saves, the time it costs")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds: every line's measurement once per round; medians are reported")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the line for the reference tier (npformer.functional, kernels='reference')")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return

    import importlib.util

    import numpy as np

    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    options = dict(attn_impl=args.attn_impl, loss_chunk=args.loss_chunk)
    if args.workers is None:
        args.workers = (os.cpu_count() or 1) if args.backend == "numpy" else 1
    rate = matmul_rate() if args.backend == "numpy" else None
    print(f"npformer training-step benchmark | backend {args.backend} | float32 | {os.cpu_count()} cores")
    if rate:
        print(f"machine float32 matmul rate (numpy, 2048^3): {rate / 1e9:.1f} GFLOP/s")
    print(f"options: {options} | npformer workers: {args.workers} ({args.parallel})")
    header = f"{'config':<17} {'framework':<10} {'params':>10} {'ms/step':>9} {'tokens/s':>10} {'peak MiB':>9}"
    print(header + (f" {'MFU':>6}" if rate else "") + f" {'vs torch':>9}")
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        tokens = cfg["batch_size"] * cfg["block_size"]
        specs = [("npformer", "npformer", options, args.workers)]  # (label, kind, options, workers)
        if args.workers > 1:
            specs.append(("1 worker", "npformer", options, 1))
        if args.recompute:
            specs.append(("+recomp", "npformer", dict(options, recompute=True), args.workers))
        if not args.no_reference:
            specs.append(("reference", "npformer", dict(options, kernels="reference"), args.workers))
        if have_torch:
            specs.append(("torch", "torch", {}, 1))
        # interleaved rounds (A, B, A, B, ...): a noisy machine slows whichever ran at that moment, so each
        # framework's ratio to torch is taken within a round, and the median over rounds is reported
        runs = {label: [] for label, *_ in specs}
        for _ in range(args.rounds):
            for label, kind, opts, workers in specs:
                runs[label].append(run_child(kind, name, args, opts, workers))
        theirs = [r["step_s"] if r else None for r in runs.get("torch", [None] * args.rounds)]
        for label, *_ in specs:
            results = [r for r in runs[label] if r is not None]
            if not results:
                continue
            step_s = float(np.median([r["step_s"] for r in results]))
            peak = max(r["peak_mib"] for r in results)
            line = f"{name:<17} {label:<10} {results[0]['n_params']:>10,} {step_s * 1e3:>9.1f} " \
                   f"{tokens / step_s:>10,.0f} {peak:>9.1f}"
            if "gpu_peak_mib" in results[0]:
                line += f" (GPU {max(r['gpu_peak_mib'] for r in results):.0f} MiB)"
            if rate:
                line += f" {step_flops(cfg, results[0]['n_params']) / step_s / rate:>6.1%}"
            ratios = [t / r["step_s"] for t, r in zip(theirs, runs[label]) if t is not None and r is not None]
            if label != "torch" and ratios:
                line += f" {float(np.median(ratios)):>8.2f}x"
            print(line, flush=True)

if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
