"""Measure scaling laws on this machine: train a grid of small GPTs over model size N (non-embedding parameters)
and training tokens D, then fit Chinchilla's L(N, D) = E + A/N^alpha + B/D^beta (approach 3) and the IsoFLOP
minima (approach 2), with bootstrap error bars, beside Chinchilla's and Kaplan's exponents.

    python examples/scaling.py --quick                  # 5 sizes x 5 token budgets, about 10 minutes on 2 cores
    python examples/scaling.py                          # 7 sizes x 6 token budgets, about an hour
    python examples/scaling.py --budget-minutes 30      # the default grid, sized to 30 minutes
    python examples/scaling.py --data my.txt --out-dir out/mine
    python examples/scaling.py --quick --fit-only       # refit and redraw from the runs already in --out-dir

The grid is planned from a measurement of this machine (seconds per step of each size, and whether one run per
core or one data-parallel run uses the cores better), so that it fills --budget-minutes. Every run's cosine
schedule is sized to its own D. Runs are written, as they finish, to OUT/results.json (and results.csv); running
the same command again resumes: finished runs are skipped and a stopped run continues from its checkpoint
(Ctrl-C once stops every run at its next step with a checkpoint). The report lands in OUT/report.txt and the
figure in OUT/scaling.png (with matplotlib).

Data: ../shared/data/tinyshakespeare.txt when it is there, else Python standard-library source; or --data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout as-is

import npformer  # noqa: E402
from npformer.data import CharTokenizer, check_long_enough, read_corpus, train_val_split  # noqa: E402
from npformer.data.corpora import stdlib_corpus  # noqa: E402
from npformer.data.text_files import TOKENIZER_KINDS  # noqa: E402
from npformer.io.atomic import SHARED, atomic_open  # noqa: E402
from npformer.scaling import SweepData, analyse, format_report, load_results, plot_sweep  # noqa: E402
from npformer.scaling.grid import BATCH_SIZE, BLOCK_SIZE, LADDER, MIN_STEPS, decades  # noqa: E402
from npformer.scaling.sweep import RESULTS_FILE, fmt_time, plan_sweep, run_sweep  # noqa: E402
from npformer.train.cli import INTERRUPTED, add_debug_flag, run_script  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
VAL_FRACTION = 0.1
# (sizes, token budgets, largest / smallest D, minutes)
PRESETS = {"quick": (LADDER[:5], 5, 16.0, 10.0), "default": (LADDER, 6, 32.0, 60.0)}


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """ "1,16,2;2,32,4" -> [(1, 16, 2), (2, 32, 4)]: (n_layer, n_embd, n_head) per model size."""
    sizes = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        fields = part.split(",")
        if len(fields) != 3 or not all(f.isdigit() and int(f) > 0 for f in fields):
            raise ValueError(f"--sizes: {part!r} is not n_layer,n_embd,n_head (three positive integers)")
        sizes.append(tuple(int(f) for f in fields))
    if not sizes:
        raise ValueError("the grid is empty: --sizes names no model size")
    return sizes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a text file (default: tinyshakespeare from ../shared/data, else Python source)")
    p.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="char")
    p.add_argument("--quick", action="store_true", help="5 sizes x 5 token budgets in about 10 minutes")
    p.add_argument("--budget-minutes", type=float, help="wall time to plan the grid for (default: 60; --quick 10)")
    p.add_argument("--out-dir", help="where runs, results and the figure go (default: out/scaling[-quick])")
    p.add_argument("--fit-only", action="store_true", help="fit and plot the runs in --out-dir; train nothing")
    p.add_argument("--jobs", type=int, help="cores to use (default: all this process may run on)")
    p.add_argument("--mode", choices=["auto", "runs", "data"], default="auto",
                   help="runs: one run per core, one BLAS thread each; data: one data-parallel run at a time; "
                        "auto: measure both and take the faster")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--figure", help="the figure's path (default: OUT/scaling.png)")
    p.add_argument("--no-plot", action="store_true", help="write no figure (matplotlib takes seconds to load)")
    p.add_argument("--sizes", help="model sizes as n_layer,n_embd,n_head;... (default: the preset's)")
    p.add_argument("--d-points", type=int, help="token budgets per size (default: the preset's)")
    p.add_argument("--d-span", type=float, help="largest / smallest token budget (default: the preset's)")
    p.add_argument("--block-size", type=int, default=BLOCK_SIZE, help=f"context of every run (default {BLOCK_SIZE})")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"sequences per step (default {BATCH_SIZE})")
    p.add_argument("--min-steps", type=int, default=MIN_STEPS, help=f"fewest steps of a run (default {MIN_STEPS})")
    p.add_argument("--progress-seconds", type=float, default=15.0, help="seconds between progress lines")
    p.add_argument("--checkpoint-seconds", type=float, default=30.0, help="seconds between a run's checkpoints")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=os.environ.get("NPFORMER_BACKEND", "numpy"))
    add_debug_flag(p)
    return p.parse_args(argv)


def load_data(args) -> SweepData:
    if args.data:
        ids, tokenizer = read_corpus(args.data, args.tokenizer)
        source = os.path.basename(args.data)
    elif os.path.exists(SHAKESPEARE):
        ids, tokenizer = read_corpus(SHAKESPEARE, args.tokenizer)
        source = "tinyshakespeare.txt"
    else:
        text = stdlib_corpus()
        tokenizer = CharTokenizer.from_text(text)
        ids, source = tokenizer.encode(text), "Python standard-library source"
    check_long_enough(len(ids), args.block_size, VAL_FRACTION, repr(source))
    train_ids, val_ids = train_val_split(ids, val_fraction=VAL_FRACTION)
    return SweepData.from_ids(train_ids, val_ids, tokenizer.vocab_size, source)


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = "quick" if args.quick else "default"
    sizes, d_points, d_span, minutes = PRESETS[preset]
    sizes = parse_sizes(args.sizes) if args.sizes is not None else list(sizes)
    d_points = d_points if args.d_points is None else args.d_points
    d_span = d_span if args.d_span is None else args.d_span
    minutes = minutes if args.budget_minutes is None else args.budget_minutes
    problems = []
    if d_points < 1:
        problems.append(f"the grid is empty: --d-points must be >= 1, got {d_points}")
    if not minutes > 0:
        problems.append(f"--budget-minutes must be positive, got {minutes}")
    if args.bootstrap < 0:
        problems.append(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.jobs is not None and args.jobs < 1:
        problems.append(f"--jobs must be >= 1, got {args.jobs}")
    for name in ("block_size", "batch_size", "min_steps"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if problems:
        raise ValueError("; ".join(problems))
    npformer.set_backend(args.backend)
    npformer.kernels.cpu.keep_host_memory()
    out_dir = args.out_dir or os.path.join("out", "scaling-quick" if args.quick else "scaling")
    figure = args.figure or os.path.join(out_dir, "scaling.png")

    data = load_data(args)
    info = data.describe()
    print(f"data: {info['source']}: {info['train_tokens']:,} train / {info['val_tokens']:,} validation tokens, "
          f"vocabulary {info['vocab_size']}")
    if args.fit_only:
        results = load_results(os.path.join(out_dir, RESULTS_FILE))
        if results is None:
            raise FileNotFoundError(f"{os.path.join(out_dir, RESULTS_FILE)}: no such file; run the sweep first "
                                    "(without --fit-only)")
        complete = True
    else:
        request = dict(preset=preset, budget_minutes=minutes, sizes=[list(s) for s in sizes], d_points=d_points,
                       d_span=d_span, block_size=args.block_size, batch_size=args.batch_size,
                       min_steps=args.min_steps, tokenizer=args.tokenizer, backend=args.backend)
        start = time.perf_counter()

        def planner():
            plan, mode = plan_sweep(minutes * 60, sizes, data, jobs=args.jobs, mode=args.mode, d_points=d_points,
                                    d_span=d_span, min_steps=args.min_steps, block_size=args.block_size,
                                    batch_size=args.batch_size)
            print_plan(plan, mode)
            return plan, mode

        results, complete = run_sweep(out_dir, data, request, planner, progress_s=args.progress_seconds,
                                      checkpoint_s=args.checkpoint_seconds)
        print(f"sweep time this session: {fmt_time(time.perf_counter() - start)}")
        if not complete:
            print(f"interrupted: {len(results['runs'])} of {len(results['plan'])} runs finished; run the same "
                  "command again to resume (stopped runs continue from their checkpoints)", file=sys.stderr)
            return INTERRUPTED
    return report(results, out_dir, None if args.no_plot else figure, args.bootstrap)


def print_plan(plan, mode: str) -> None:
    Ns = sorted({r.N for r in plan.runs})
    Ds = sorted({r.D for r in plan.runs})
    print(f"plan: {len(Ns)} sizes x {len(Ds)} token budgets = {len(plan.runs)} runs, {mode} mode on {plan.jobs} "
          f"worker(s), predicted {fmt_time(plan.makespan_s)}")
    print(f"  N: {', '.join(f'{n:,}' for n in Ns)} ({decades(Ns):.2f} decades)")
    print(f"  D: {', '.join(f'{d:,}' for d in Ds)} ({decades(Ds):.2f} decades)")


def report(results: dict, out_dir: str, figure: str | None, n_boot: int) -> int:
    runs = results["runs"]
    n_sizes, n_budgets = len({r["N"] for r in runs}), len({r["D"] for r in runs})
    if len(runs) < 5 or n_sizes < 2 or n_budgets < 2:
        print(f"fit skipped: {len(runs)} runs over {n_sizes} sizes and {n_budgets} token budgets; the law's 5 "
              "parameters need at least 5 runs over 2 sizes and 2 budgets")
        return 0
    analysis = analyse(runs, n_boot=n_boot)
    text = format_report(analysis, results["data"])
    print(text)
    with atomic_open(os.path.join(out_dir, "report.txt"), "w", encoding="utf-8", permissions=SHARED) as f:
        f.write(text + "\n")
    title = (f"{results['data'].get('source')}: {len(runs)} runs, "
             f"alpha={analysis['law'].alpha:.2f} beta={analysis['law'].beta:.2f} E={analysis['law'].E:.2f}")
    if figure and plot_sweep(runs, analysis, figure, title=title):
        print(f"figure: {figure}")
    print(f"results: {os.path.join(out_dir, RESULTS_FILE)}; report: {os.path.join(out_dir, 'report.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
