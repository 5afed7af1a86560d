"""Data parallelism over MPI beside one machine's runners: tokens/s and the fraction of each step spent
communicating, at nanoGPT's baby and shakespeare_char configs, in one run.

Lines per config (one training step = forward, backward, clipping, AdamW on the same (B, T) batch, float32):
- ``1 process``        the model alone, BLAS on every core;
- ``processes x2``     ProcessDataParallel with 2 worker processes (one machine, shared memory);
- ``mpi 1 rank``       MPIDataParallel on one rank: what the MPI runner itself costs;
- ``mpi 2x1``          2 ranks, one per core, 1 worker each (``mpiexec -n 2``);
- ``mpi 1x2``          1 rank per machine, 2 local worker processes (``mpiexec -n 1 ... --workers 2``);
- ``mpi 2x1 zero1``    2 ranks with AdamW's moments sharded (ZeRO-1): the optimizer memory per rank.

"comm" is the share of the step spent in collectives (the gradient Allreduce, the loss Allgather, ZeRO's
parameter Allgatherv), "wait" the share spent waiting for the slower rank before them (a barrier before each
collective separates the two; it costs one round trip each): rank 0's figures. Each measurement runs in
fresh processes; the lines are measured in interleaved rounds (A, B, C, A, B, C, ...) and medians reported.

    python benchmarks/mpi_data_parallel.py                       # both configs, 3 rounds
    python benchmarks/mpi_data_parallel.py --configs baby --steps 30 --rounds 5

Needs mpi4py and mpiexec (pip install 'npformer[mpi]').
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

CONFIGS = {  # as benchmarks/train_step.py
    "baby": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, batch_size=12),
    "shakespeare_char": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, batch_size=16),
}
# label -> (MPI ranks or 0 for no MPI, workers per process, runner, ZeRO-1)
LINES = {
    "1 process": (0, 1, "local", False),
    "processes x2": (0, 2, "local", False),
    "mpi 1 rank": (1, 1, "mpi", False),
    "mpi 2x1": (2, 1, "mpi", False),
    "mpi 1x2": (1, 2, "mpi", False),
    "mpi 2x1 zero1": (2, 1, "mpi", True),
}


def measure(cfg: dict, steps: int, warmup: int, workers: int, runner_kind: str, zero1: bool) -> dict | None:
    """One measurement in this process (every rank runs it under mpiexec); rank 0's figures, or None elsewhere."""
    import numpy as np

    from npformer import set_kernels
    from npformer.kernels.cpu import keep_host_memory
    from npformer.models import GPT, GPTConfig
    from npformer.parallel import data_parallel
    from npformer.train.optim import AdamW, clip_grad_norm, param_groups

    set_kernels("fast")
    keep_host_memory()
    model = GPT(GPTConfig(**{k: v for k, v in cfg.items() if k != "batch_size"}))
    groups = param_groups(model.named_parameters(), 0.1)
    rank = 0
    if runner_kind == "mpi":
        from npformer.parallel.mpi import MPIDataParallel

        runner = MPIDataParallel(model, workers=workers, mode="processes", check_every=0)
        runner.separate_waits = True  # the wait for the slower rank is not communication: count it apart
        rank = runner.rank
        if zero1:
            from npformer.train.zero import ZeroAdamW

            opt = ZeroAdamW(groups, lr=1e-3, betas=(0.9, 0.99), comm=runner.comm)
        else:
            opt = AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    else:
        runner = data_parallel(model, workers, "processes")
        opt = AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(0)  # the same global batches on every rank
    B, T, V = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]
    batches = [(rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))) for _ in range(4)]
    params = model.parameters()
    optimizer_comm, wait = [0.0], [0.0]

    def step(i):
        x, y = batches[i % 4]
        model.zero_grad()
        loss = runner.loss(x, y)
        runner.backward()
        clip_grad_norm(params, 1.0)
        if zero1:  # its Allgatherv is communication too (the update itself is a small part), after its wait
            t0 = time.perf_counter()
            runner.comm.Barrier()
            wait[0] += time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.step()
        if zero1:
            optimizer_comm[0] += time.perf_counter() - t0
        return loss

    for i in range(warmup):
        step(i)
    comm0, wait0 = getattr(runner, "comm_seconds", 0.0), getattr(runner, "wait_seconds", 0.0)
    optimizer_comm[0] = wait[0] = 0.0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        float(step(i))
        times.append(time.perf_counter() - t0)
    comm = getattr(runner, "comm_seconds", 0.0) - comm0 + optimizer_comm[0]
    waited = getattr(runner, "wait_seconds", 0.0) - wait0 + wait[0]
    if hasattr(runner, "close"):
        runner.close()
    if rank != 0:
        return None
    out = dict(step_s=float(np.median(times)), comm=comm / sum(times), wait=waited / sum(times))
    if zero1:
        out.update(optimizer_mib=opt.memory_bytes() / 2**20, unsharded_mib=opt.unsharded_bytes() / 2**20)
    else:
        out.update(optimizer_mib=sum(2 * p.data.nbytes for p in params) / 2**20)
    return out


def run_line(label: str, config: str, args) -> dict | None:
    ranks, workers, kind, zero1 = LINES[label]
    payload = json.dumps(dict(config=config, steps=args.steps, warmup=args.warmup, workers=workers, kind=kind,
                              zero1=zero1))
    argv = [os.path.abspath(__file__), "--child", payload]
    if ranks:
        from npformer.parallel.mpi_launch import mpiexec_command

        command, env = mpiexec_command(ranks, argv)
    else:
        command, env = [sys.executable, *argv], None
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        print(f"  {label} {config} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--configs", default="baby,shakespeare_char", help=f"comma-separated, from {list(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 baby, 4 shakespeare_char)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--lines", default=",".join(LINES), help=f"comma-separated, from {list(LINES)}")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        p = json.loads(args.child)
        out = measure(CONFIGS[p["config"]], p["steps"], p["warmup"], p["workers"], p["kind"], p["zero1"])
        if out is not None:
            print(json.dumps(out), flush=True)
        return

    import numpy as np

    from npformer.parallel.mpi_launch import find_mpiexec

    names = args.configs.split(",")
    labels = args.lines.split(",")
    for name in names + labels:
        if name not in CONFIGS and name not in LINES:
            raise ValueError(f"unknown config or line {name!r}; configs: {list(CONFIGS)}, lines: {list(LINES)}")
    if find_mpiexec() is None:
        raise FileNotFoundError("no mpiexec: pip install 'npformer[mpi]'")
    print(f"MPI data-parallel benchmark | numpy float32 | {os.cpu_count()} cores | {args.rounds} interleaved rounds")
    print(f"{'config':<17} {'line':<14} {'ms/step':>9} {'tokens/s':>10} {'comm':>6} {'wait':>6} "
          f"{'optimizer MiB/rank':>19}")
    for name in names:
        cfg = CONFIGS[name]
        steps = args.steps or (20 if name == "baby" else 4)
        tokens = cfg["batch_size"] * cfg["block_size"]
        runs = {label: [] for label in labels}
        for _ in range(args.rounds):
            for label in labels:
                runs[label].append(run_line(label, name, argparse.Namespace(steps=steps, warmup=args.warmup)))
        for label in labels:
            results = [r for r in runs[label] if r is not None]
            if not results:
                continue
            step_s = float(np.median([r["step_s"] for r in results]))
            comm = float(np.median([r["comm"] for r in results]))
            wait = float(np.median([r["wait"] for r in results]))
            memory = f"{results[0]['optimizer_mib']:.2f}"
            if "unsharded_mib" in results[0]:
                memory += f" (of {results[0]['unsharded_mib']:.2f})"
            print(f"{name:<17} {label:<14} {step_s * 1e3:>9.1f} {tokens / step_s:>10,.0f} {comm:>6.1%} {wait:>6.1%} "
                  f"{memory:>19}", flush=True)


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
