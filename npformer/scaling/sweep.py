"""Running a grid on every core, with progress and time left, and resuming it.

    results, finished = run_sweep("out/scaling", data, request, planner)

Two ways to use two cores (``MODES``): "runs", one run per core in worker processes, each with one BLAS thread; or
"data", one run at a time split data-parallel over the cores (TrainConfig.workers). ``measure_modes`` times both
on the same model, interleaved, and the planner uses the faster. The first Ctrl-C asks every running run to save a
checkpoint at its next step and stop; running the same command again skips finished runs and continues the
stopped ones from their checkpoints.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import signal
import sys
import threading
import time
from queue import Empty

import numpy as np

from .. import backend
from ..kernels.cpu import blas_threads, set_blas_threads, single_threaded, usable_cpus
from .grid import BATCH_SIZE, BLOCK_SIZE, MIN_STEPS, Plan, RunSpec, plan_grid
from .records import load_results, new_results, save_results
from .runner import SweepData, run_one, time_steps

MODES = ("runs", "data")
RESULTS_FILE = "results.json"
_worker: dict = {}  # what a worker process was given (SweepData, the progress queue, the stop event)


def say(text: str) -> None:
    """Print a line now, even into a file or a pipe (where print alone would hold it in a buffer)."""
    print(text, flush=True)


def fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0) + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def processes_usable() -> bool:
    """Worker processes need fork (Linux) and the NumPy backend: a device backend trains one run at a time."""
    return sys.platform.startswith("linux") and backend.get_backend() == "numpy" \
        and "fork" in multiprocessing.get_all_start_methods()


def default_jobs() -> int:
    return usable_cpus() if processes_usable() else 1


# -- worker processes ---------------------------------------------------------------------------------------------
def _init_worker(data: SweepData, queue, stop) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it sets ``stop``
    set_blas_threads(1)  # one core per run: a two-thread BLAS in each of two runs would oversubscribe
    os.environ["NPFORMER_NUM_THREADS"] = "1"  # and the fast tier's blockwise thread pool likewise
    _worker.update(data=data, queue=queue, stop=stop)


def _worker_run(spec: dict, run_dir: str | None, checkpoint_s: float):
    queue = _worker["queue"]

    def progress(event, name, step, steps):
        queue.put((event, name, step, steps))

    with single_threaded():
        return run_one(RunSpec.from_dict(spec), _worker["data"], run_dir, workers=1, stop=_worker["stop"],
                       progress=progress, checkpoint_s=checkpoint_s)


def _worker_time(spec: dict, steps: int) -> float:
    with single_threaded():
        return time_steps(RunSpec.from_dict(spec), _worker["data"], steps)


def _pool(jobs: int, data: SweepData, queue=None, stop=None):
    ctx = multiprocessing.get_context("fork")
    return futures.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                       initargs=(data, queue, stop))


# -- measuring ----------------------------------------------------------------------------------------------------
def measure_modes(spec: RunSpec, data: SweepData, jobs: int, steps: int = 4, rounds: int = 2) -> dict:
    """Steps per second the whole machine does on ``spec`` in each mode, interleaved (runs, data, runs, data) and
    the median of ``rounds`` taken: "runs" = ``jobs`` copies at once, one per worker process with one BLAS
    thread; "data" = one copy data-parallel over ``jobs`` workers. Returns {"runs": .., "data": .., "single": ..
    (one copy, one thread, seconds per step), "choice": the faster mode}."""
    rates = {"runs": [], "data": []}
    with blas_threads(1), single_threaded():
        single = time_steps(spec, data, steps)
    with _pool(jobs, data) as pool:
        for _ in range(rounds):
            times = list(pool.map(_worker_time, [spec.to_dict()] * jobs, [steps] * jobs))
            rates["runs"].append(sum(1.0 / t for t in times))
            rates["data"].append(1.0 / time_steps(spec, data, steps, workers=jobs, parallel="processes"))
    out = {mode: float(np.median(r)) for mode, r in rates.items()}
    out["single"] = single
    out["choice"] = max(MODES, key=lambda m: out[m])
    return out


def step_times(sizes, data: SweepData, vocab_size: int, steps: int = 3, block_size: int = BLOCK_SIZE,
               batch_size: int = BATCH_SIZE) -> dict:
    """{size: seconds per training step on one core with one BLAS thread} for (n_layer, n_embd, n_head) sizes."""
    out = {}
    with blas_threads(1), single_threaded():
        for size in sizes:
            L, C, H = size
            spec = RunSpec(L, C, H, steps=10, vocab_size=vocab_size, block_size=block_size, batch_size=batch_size)
            out[tuple(size)] = time_steps(spec, data, steps)
    return out


def plan_sweep(budget_s: float, sizes, data: SweepData, jobs: int | None = None, mode: str = "auto",
               d_points: int = 4, d_span: float = 10.0, min_steps: int = MIN_STEPS, reserve_s: float | None = None,
               block_size: int = BLOCK_SIZE, batch_size: int = BATCH_SIZE, log=say) -> tuple[Plan, str]:
    """Measure this machine (seconds per step of every size on one core; with two or more cores, ``measure_modes``
    on the middle size) and plan the grid whose predicted wall time fills what is left of ``budget_s`` after the
    measuring and ``reserve_s`` for the fits (default: 8% of the budget, at most a minute). mode "auto" takes the faster
    of MODES. Returns (Plan, mode)."""
    t0 = time.perf_counter()
    reserve_s = min(60.0, 0.08 * budget_s) if reserve_s is None else reserve_s
    sizes = [tuple(s) for s in sizes]
    if not sizes:
        raise ValueError("the grid is empty: give at least one model size")
    if mode not in MODES + ("auto",):
        raise ValueError(f"mode must be one of {MODES + ('auto',)}, got {mode!r}")
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not processes_usable():
        jobs = 1
    shape = dict(block_size=block_size, batch_size=batch_size)
    times = step_times(sizes, data, data.vocab_size, **shape)
    log("one core, one BLAS thread: " + ", ".join(f"L{L}-C{C} {times[(L, C, H)] * 1e3:.0f} ms/step"
                                                   for L, C, H in sizes))
    factor = 1.0  # seconds per step under the chosen mode / seconds per step alone on one core
    if jobs > 1:
        L, C, H = sizes[len(sizes) // 2]
        m = measure_modes(RunSpec(L, C, H, steps=10, vocab_size=data.vocab_size, **shape), data, jobs)
        chosen = m["choice"] if mode == "auto" else mode
        log(f"{jobs} cores on L{L}-C{C}: {jobs} runs at once (one BLAS thread each) {m['runs']:.1f} steps/s, one "
            f"data-parallel run {m['data']:.1f} steps/s; using {chosen!r}"
            + (" (the faster)" if mode == "auto" else " (as asked)"))
        mode = chosen
        factor = (jobs / m["runs"] if mode == "runs" else 1.0 / m["data"]) / m["single"]
    else:
        mode = "runs" if mode == "auto" else mode
    per_step = {s: t * factor for s, t in times.items()}
    tokens_per_step = block_size * batch_size
    # the final pass over the validation split: forward only, about a third of a step per step's worth of tokens
    overhead = {s: 0.2 + per_step[s] * data.val_ids.size / tokens_per_step / 3 for s in sizes}
    budget_left = budget_s - (time.perf_counter() - t0) - reserve_s
    if budget_left <= 0:
        raise ValueError(f"a budget of {budget_s / 60:.2f} minutes is too small for one run: measuring this machine "
                         f"took {time.perf_counter() - t0:.0f} s of it")
    plan = plan_grid(budget_left, sizes, per_step, jobs if mode == "runs" else 1, data.vocab_size,
                     d_points=d_points, d_span=d_span, overhead_s=overhead, min_steps=min_steps, **shape)
    plan.jobs = jobs
    return plan, mode


# -- progress -----------------------------------------------------------------------------------------------------
class Progress:
    """Work done and time left across the whole sweep: each run weighs what the planner predicted it costs, and
    the rate measured so far (in predicted seconds per second) turns the work left into time left."""

    def __init__(self, runs, predicted: dict, jobs: int, log, every_s: float = 15.0):
        self.cost = {r.name: max(float(predicted.get(r.name, r.D)), 1e-9) for r in runs}
        self.steps = {r.name: r.steps for r in runs}
        self.frac = dict.fromkeys(self.cost, 0.0)
        self.base = dict.fromkeys(self.cost, 0.0)  # done before this session (a resumed run's checkpoint)
        self.jobs, self.log, self.every_s = jobs, log, every_s
        self.predicted_wall = sum(self.cost.values()) / max(jobs, 1)
        self.active: set = set()
        self.done = 0
        self.t0 = time.perf_counter()
        self.last = self.t0

    def update(self, event: str, name: str, step: int, steps: int) -> None:
        if name not in self.frac:
            return
        self.frac[name] = step / max(steps, 1)
        if event in ("start", "resumed"):
            self.base[name] = self.frac[name]
            self.active.add(name)
            if event == "resumed":
                self.log(f"  {name}: resumed from its checkpoint at step {step}/{steps}")
        self.maybe_log()

    def finish(self, name: str) -> None:
        self.frac[name] = 1.0
        self.active.discard(name)
        self.done += 1

    def left_s(self) -> float:
        elapsed = time.perf_counter() - self.t0
        done = sum(self.cost[n] * (self.frac[n] - self.base[n]) for n in self.cost)
        left = sum(self.cost[n] * (1.0 - self.frac[n]) for n in self.cost)
        total = done + left
        if done > 0.02 * total and elapsed > 5:
            rate = done / elapsed  # predicted seconds of work per second of wall time, all workers together
            per_worker = rate / max(min(self.jobs, len(self.cost) - self.done), 1)
            longest = max((self.cost[n] * (1 - self.frac[n]) for n in self.active), default=0.0)
            return max(left / rate, longest / per_worker)
        return left / max(self.jobs, 1)

    def line(self) -> str:
        total = sum(self.cost.values())
        done = sum(self.cost[n] * self.frac[n] for n in self.cost)
        running = ", ".join(f"{n.split('-T')[0]} S{self.steps[n]} {self.frac[n]:.0%}" for n in sorted(self.active))
        return (f"sweep: {self.done}/{len(self.cost)} runs done, {done / total:.0%} of the work | "
                f"elapsed {fmt_time(time.perf_counter() - self.t0)} | left ~{fmt_time(self.left_s())}"
                + (f" | running {running}" if running else ""))

    def maybe_log(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every_s:
            self.last = now
            self.log(self.line())


# -- running a grid ------------------------------------------------------------------------------------------------
class _StopOnCtrlC:
    """While active, the first Ctrl-C sets ``stop`` (runs save a checkpoint and end at their next step); a second
    one raises KeyboardInterrupt at once. Outside the main thread it does nothing."""

    def __init__(self, stop, log):
        self.stop, self.log, self.previous = stop, log, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        self.log("\nstopping: each running run saves a checkpoint at its next step (Ctrl-C again to quit now)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def run_grid(runs, data: SweepData, out_dir: str | None, on_record, jobs: int = 1, mode: str = "runs",
             predicted: dict | None = None, log=say, stop=None, progress_s: float = 15.0,
             checkpoint_s: float = 30.0, progress_hook=None) -> bool:
    """Train every RunSpec of ``runs``, calling ``on_record(record)`` in this process as each finishes; return True
    when all finished, False when ``stop`` was set first (the runs then saved checkpoints in their directories,
    ``out_dir/runs/NAME``). mode "runs": ``jobs`` runs at once in worker processes (NumPy backend on Linux; else
    one at a time here); "data": one at a time, data-parallel over ``jobs`` workers.

    progress_hook(event, name, step, steps): called for every progress event (tests use it to interrupt)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    runs = list(runs)
    if not runs:
        return True
    progress = Progress(runs, predicted or {}, jobs if mode == "runs" else 1, log, progress_s)

    def run_dir(spec):
        return None if out_dir is None else os.path.join(out_dir, "runs", spec.name)

    def event(kind, name, step, steps):
        progress.update(kind, name, step, steps)
        if progress_hook is not None:
            progress_hook(kind, name, step, steps)

    def finished(spec, record):
        progress.finish(spec.name)
        log(f"  done {spec.name}: N={record['N']:,} D={record['D']:,} val loss {record['val_loss']:.4f} "
            f"({fmt_time(record['wall_s'])})")
        on_record(record)
        progress.maybe_log(force=True)

    in_process = mode == "data" or jobs <= 1 or not processes_usable()
    if in_process:
        stop = stop if stop is not None else threading.Event()
        workers = jobs if mode == "data" and processes_usable() else 1  # a device trains one replica
        with _StopOnCtrlC(stop, log):
            for spec in runs:
                if stop.is_set():
                    return False
                record = run_one(spec, data, run_dir(spec), workers=workers, stop=stop, progress=event,
                                 checkpoint_s=checkpoint_s)
                if record is None:
                    return False
                finished(spec, record)
        return True

    ctx = multiprocessing.get_context("fork")
    queue, mp_stop = ctx.Queue(), ctx.Event()
    if stop is not None and stop.is_set():
        return False
    error = None
    complete = True
    with _StopOnCtrlC(mp_stop, log), _pool(jobs, data, queue, mp_stop) as pool:
        pending = {pool.submit(_worker_run, spec.to_dict(), run_dir(spec), checkpoint_s): spec for spec in runs}
        while pending:
            done, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
            while True:
                try:
                    message = queue.get_nowait()
                except Empty:  # nothing more now
                    break
                event(*message)
            if stop is not None and stop.is_set():
                mp_stop.set()
            if mp_stop.is_set():
                for f in list(pending):
                    if f.cancel():
                        pending.pop(f)
                        complete = False
            for f in done:
                spec = pending.pop(f)
                exc = f.exception()
                if exc is not None:
                    mp_stop.set()
                    error = error or exc
                    continue
                record = f.result()
                if record is None:
                    complete = False
                else:
                    finished(spec, record)
            progress.maybe_log()
    if error is not None:
        raise error
    return complete and not mp_stop.is_set()


def run_sweep(out_dir: str, data: SweepData, request: dict, planner, log=say, jobs: int | None = None,
              stop=None, progress_s: float = 15.0, checkpoint_s: float = 30.0, progress_hook=None):
    """Plan (or reload the plan of) a sweep in ``out_dir`` and run what it has not finished.

    request: what the user asked for (the grid's settings); a sweep in ``out_dir`` made for another request or
    other data is an error, not a silent mix. planner(): -> (Plan, mode), called only for a new sweep (it
    measures this machine). Returns (results dict, finished: bool)."""
    path = os.path.join(out_dir, RESULTS_FILE)
    results = load_results(path)
    if results is not None:
        if results["data"].get("fingerprint") != data.describe()["fingerprint"]:
            raise ValueError(f"{path} holds a sweep on other data ({results['data'].get('source')}); give the same "
                             "--data to resume it, or another --out-dir")
        if results["request"] != request:
            differ = sorted(k for k in set(results["request"]) | set(request)
                            if results["request"].get(k) != request.get(k))
            raise ValueError(f"{path} holds a sweep planned with other settings ({', '.join(differ)}: "
                             f"{ {k: results['request'].get(k) for k in differ} }); run it with those to resume "
                             "it, or give another --out-dir")
        try:
            runs = [RunSpec.from_dict(r["spec"]) for r in results["plan"]]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: the results file is corrupt (a planned run: {exc}); delete it to start the "
                             "sweep over, or give another --out-dir") from None
        if results["mode"] not in MODES or not isinstance(results["jobs"], int) or results["jobs"] < 1:
            raise ValueError(f"{path}: the results file is corrupt (mode {results['mode']!r}, "
                             f"jobs {results['jobs']!r})")
        predicted = {spec.name: r["predicted_s"] for spec, r in zip(runs, results["plan"])}
        mode, jobs_used = results["mode"], results["jobs"]
        log(f"resuming the sweep in {out_dir}: {len(results['runs'])} of {len(runs)} runs finished")
    else:
        plan, mode = planner()
        runs, predicted, jobs_used = plan.runs, plan.predicted_s, plan.jobs
        results = new_results(data.describe(), request,
                              [dict(spec=r.to_dict(), predicted_s=round(plan.predicted_s[r.name], 2))
                               for r in plan.runs], mode, jobs_used)
        results["predicted_makespan_s"] = round(plan.makespan_s, 1)
        save_results(path, results)
    jobs_used = jobs_used if jobs is None else jobs
    finished_names = {r["name"] for r in results["runs"]}
    todo = [r for r in runs if r.name not in finished_names]

    def on_record(record):
        results["runs"].append(record)
        save_results(path, results)

    if todo:
        left = sum(predicted.get(r.name, 0.0) for r in todo) / (jobs_used if mode == "runs" else 1)
        log(f"{len(todo)} runs to train ({mode} mode, {jobs_used} workers): about {fmt_time(left)} predicted")
    complete = run_grid(todo, data, out_dir, on_record, jobs=jobs_used, mode=mode, predicted=predicted, log=log,
                        stop=stop, progress_s=progress_s, checkpoint_s=checkpoint_s, progress_hook=progress_hook)
    return results, complete
