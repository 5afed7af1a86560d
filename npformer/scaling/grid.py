"""The sweep's grid: model shapes (N, non-embedding parameters), token budgets (D), each run's settings, and the
planner that sizes the grid to a time budget.

    sizes = LADDER[:5]                                      # (n_layer, n_embd, n_head), smallest first
    plan = plan_grid(budget_s=600, sizes=sizes, seconds_per_step={...}, jobs=2, vocab_size=65)
    plan.runs                                               # RunSpecs, largest cost first

N counts what Kaplan et al. (2020) count: every parameter but the token and position tables (a tied LM head is
the token table, so it is left out too). Compute is C = 6 N D, with the attention term 6 n_layer T n_embd D beside
it (the scores and weighted values, Kaplan's 2 n_layer n_ctx d_attn per token forward, times 3 for training).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..models import GPTConfig
from ..size import count_params, flops_per_token, shape_of

# Shapes from a few thousand to about a million non-embedding parameters (at vocabulary ~65), each a little
# deeper and wider than the last, as Kaplan's and Chinchilla's grids grow both together.
LADDER = ((1, 16, 2), (2, 24, 2), (2, 32, 4), (3, 48, 4), (4, 64, 4), (4, 96, 6), (6, 128, 8))
BLOCK_SIZE = 64  # context T of every run: fixed, so that only N and D change across the grid
BATCH_SIZE = 16  # sequences per step: 1,024 tokens a step
MIN_STEPS = 40  # a run shorter than this has no schedule to speak of (warmup, then a cosine to 10%)
SEED = 1337


def base_learning_rate(n_embd: int) -> float:
    """Peak learning rate for a width: smaller models take larger steps (about 1/sqrt(width), as muP-style
    transfer suggests for Adam), 3e-3 at width 16 down to 1e-3 at width 128."""
    return float(f"{3e-3 * min(1.0, math.sqrt(16 / n_embd)):.3g}")


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: a model shape trained for ``steps`` steps of batch_size x block_size tokens, its
    cosine schedule (warmup, then decay to a tenth) sized to exactly those steps."""

    n_layer: int
    n_embd: int
    n_head: int
    steps: int
    vocab_size: int
    block_size: int = BLOCK_SIZE
    batch_size: int = BATCH_SIZE
    learning_rate: float | None = None  # None: base_learning_rate(n_embd)
    seed: int = SEED

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "n_head", "steps", "vocab_size", "block_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RunSpec: {name} must be a positive integer, got {value!r}")
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", base_learning_rate(self.n_embd))
        self.model_config()  # heads that do not divide the width fail here, with GPTConfig's message

    @property
    def name(self) -> str:
        """A directory name that names everything the run's result depends on."""
        return (f"L{self.n_layer}-C{self.n_embd}-H{self.n_head}-T{self.block_size}-B{self.batch_size}-"
                f"S{self.steps}-lr{self.learning_rate:g}-s{self.seed}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size

    @property
    def D(self) -> int:
        """Training tokens."""
        return self.steps * self.tokens_per_step

    def model_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=0.0, bias=True, seed=self.seed)

    @property
    def N(self) -> int:
        return non_embedding_params(self.model_config())

    def counts(self) -> dict:
        """N, N_total, D, C = 6 N D, C_attn (the attention term), and flops (npformer.size's count of the
        training FLOPs, LM head included)."""
        config = self.model_config()
        shape = shape_of(config)
        N, D = non_embedding_params(config), self.D
        return dict(N=N, N_total=count_params(shape), D=D, C=6 * N * D,
                    C_attn=6 * self.n_layer * self.block_size * self.n_embd * D,
                    flops=flops_per_token(shape, self.block_size)["training"] * D)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        if not isinstance(d, dict):
            raise ValueError(f"a run spec must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"a run spec has unknown fields {unknown}")
        return cls(**d)


def non_embedding_params(config: GPTConfig) -> int:
    """Parameters of ``config`` without the token and position tables and an untied LM head (Kaplan's N)."""
    shape = shape_of(config)
    return count_params(shape) - shape.embedding_params - shape.head_params


@dataclass
class Plan:
    """The runs to do, largest predicted cost first, and what the planner predicted."""

    runs: list  # RunSpec
    predicted_s: dict  # run name -> predicted wall seconds of the run alone on its worker
    makespan_s: float  # predicted wall time of the whole grid on ``jobs`` workers
    jobs: int


def token_ladder(d_max: int, points: int, span: float, tokens_per_step: int) -> list[int]:
    """``points`` step counts, geometric from d_max / span up to d_max tokens (rounded to whole steps)."""
    steps = []
    for k in range(points):
        d = d_max / span ** (1 - k / (points - 1)) if points > 1 else d_max
        steps.append(max(1, int(round(d / tokens_per_step))))
    return sorted(set(steps))


def _makespan(costs: list[float], jobs: int) -> float:
    """Longest-processing-time-first packing of ``costs`` on ``jobs`` workers: the finishing time."""
    loads = [0.0] * jobs
    for cost in sorted(costs, reverse=True):
        i = loads.index(min(loads))
        loads[i] += cost
    return max(loads) if loads else 0.0


def plan_grid(budget_s: float, sizes, seconds_per_step: dict, jobs: int, vocab_size: int, d_points: int = 4,
              d_span: float = 10.0, overhead_s: dict | None = None, block_size: int = BLOCK_SIZE,
              batch_size: int = BATCH_SIZE, min_steps: int = MIN_STEPS, seed: int = SEED) -> Plan:
    """The grid sizes x d_points token budgets (geometric, the largest ``d_span`` times the smallest) whose
    predicted wall time on ``jobs`` workers fills ``budget_s`` seconds.

    sizes: (n_layer, n_embd, n_head) triples. seconds_per_step: {size: seconds one training step takes on one
    worker}. overhead_s: {size: seconds a run spends outside its steps (building, the final validation pass)}.
    ValueError (naming the budget that would do) when the budget cannot give every run ``min_steps`` steps, or
    cannot fit a single run.
    """
    sizes = [tuple(s) for s in sizes]
    if not sizes:
        raise ValueError("the grid is empty: give at least one model size")
    if d_points < 1:
        raise ValueError(f"the grid is empty: d_points must be >= 1, got {d_points}")
    if d_points > 1 and d_span <= 1:
        raise ValueError(f"d_span must be > 1 to span token budgets, got {d_span}")
    missing = [s for s in sizes if s not in seconds_per_step]
    if missing:
        raise ValueError(f"no step time measured for sizes {missing}")
    if not budget_s > 0:
        raise ValueError(f"the time budget must be positive, got {budget_s} s")
    overhead_s = overhead_s or {}
    tokens_per_step = block_size * batch_size
    # the steps of all runs scale together with the largest run's: wall time is an affine function of it
    fractions = [1.0 / d_span ** (1 - k / (d_points - 1)) if d_points > 1 else 1.0 for k in range(d_points)]

    def costs(max_steps: float) -> list[float]:
        return [seconds_per_step[s] * max(f * max_steps, 1) + overhead_s.get(s, 0.0) for s in sizes
                for f in fractions]

    fixed = _makespan(costs(0.0), jobs)
    smallest_run = min(seconds_per_step[s] * min_steps + overhead_s.get(s, 0.0) for s in sizes)
    if budget_s < smallest_run:
        raise ValueError(f"a budget of {budget_s / 60:.2f} minutes is too small for one run: the smallest model "
                         f"needs about {smallest_run / 60:.2f} minutes for {min_steps} steps")
    unit = _makespan(costs(1000.0), jobs) - fixed  # per 1000 steps of the largest runs
    max_steps = 1000.0 * (budget_s - fixed) / unit if unit > 0 else 0.0
    for _ in range(20):  # packing changes with the scale: shrink until the packed grid fits
        if _makespan(costs(max_steps), jobs) <= budget_s * 1.001:
            break
        max_steps *= 0.97
    need = min_steps / min(fractions)
    if max_steps < need:
        need_s = _makespan(costs(need), jobs)
        raise ValueError(f"a budget of {budget_s / 60:.2f} minutes is too small for this grid "
                         f"({len(sizes)} sizes x {d_points} token budgets on {jobs} worker(s)): the shortest runs "
                         f"need {min_steps} steps, which takes about {need_s / 60:.2f} minutes; give a larger "
                         "--budget-minutes or fewer sizes")
    steps = token_ladder(int(max_steps * tokens_per_step), d_points, d_span, tokens_per_step)
    runs = [RunSpec(n_layer=L, n_embd=C, n_head=H, steps=s, vocab_size=vocab_size, block_size=block_size,
                    batch_size=batch_size, seed=seed) for (L, C, H) in sizes for s in steps]
    predicted = {r.name: seconds_per_step[(r.n_layer, r.n_embd, r.n_head)] * r.steps
                 + overhead_s.get((r.n_layer, r.n_embd, r.n_head), 0.0) for r in runs}
    runs.sort(key=lambda r: predicted[r.name], reverse=True)
    return Plan(runs=runs, predicted_s=predicted, makespan_s=_makespan(list(predicted.values()), jobs), jobs=jobs)


def decades(values) -> float:
    """log10(max / min) of positive values (0 for fewer than two)."""
    values = [v for v in values if v > 0]
    return math.log10(max(values) / min(values)) if len(values) > 1 else 0.0
