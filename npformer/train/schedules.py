"""Learning-rate schedules: small callables ``schedule(step) -> float`` with ``step`` the 0-based iteration.

    schedule = warmup_cosine(max_lr=6e-4, warmup_steps=2000, decay_steps=600_000, min_lr=6e-5)
    for step in range(max_steps):
        opt.set_lr(schedule(step))

Each schedule validates its arguments, has a repr that reads like the call that made it, and a ``to_dict()`` that
``schedule_from_dict`` turns back into the schedule (to save it with a checkpoint).
"""

from __future__ import annotations

import math
import operator


def _number(name: str, value, where: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{where}: {name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def _int(name: str, value, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    return value


class Schedule:
    """Base class: argument storage, repr, to_dict, and step validation."""

    kind = "schedule"
    _fields: tuple[str, ...] = ()

    def __call__(self, step: int) -> float:
        return self._lr(_int("step", step, f"{self.kind}"))

    def _lr(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{f: getattr(self, f) for f in self._fields}}

    def __repr__(self) -> str:
        return f"{self.kind}(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields) + ")"

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    __hash__ = None


class constant(Schedule):  # noqa: N801 - a schedule reads like the function that makes it
    """lr(step) = lr for every step."""

    kind = "constant"
    _fields = ("lr",)

    def __init__(self, lr: float):
        self.lr = _number("lr", lr, self.kind)

    def _lr(self, step: int) -> float:
        return self.lr


def _warmup(max_lr: float, warmup_steps: int, step: int) -> float:
    """nanoGPT's linear warmup: max_lr * (step + 1) / (warmup_steps + 1) for step < warmup_steps."""
    return max_lr * (step + 1) / (warmup_steps + 1)


class warmup_cosine(Schedule):  # noqa: N801
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr, then min_lr::

        step < warmup_steps:   max_lr * (step + 1) / (warmup_steps + 1)
        step > decay_steps:    min_lr
        otherwise:             r = (step - warmup_steps) / (decay_steps - warmup_steps)
                               min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)
    """

    kind = "warmup_cosine"
    _fields = ("max_lr", "warmup_steps", "decay_steps", "min_lr")

    def __init__(self, max_lr: float, warmup_steps: int, decay_steps: int, min_lr: float = 0.0):
        self.max_lr = _number("max_lr", max_lr, self.kind)
        self.warmup_steps = _int("warmup_steps", warmup_steps, self.kind)
        self.decay_steps = _int("decay_steps", decay_steps, self.kind)
        self.min_lr = _number("min_lr", min_lr, self.kind)
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(f"{self.kind}: decay_steps ({self.decay_steps}) must be greater than warmup_steps "
                             f"({self.warmup_steps})")
        if self.min_lr > self.max_lr:
            raise ValueError(f"{self.kind}: min_lr ({self.min_lr}) must not exceed max_lr ({self.max_lr})")

    def _lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(self.max_lr, self.warmup_steps, step)
        if step > self.decay_steps:
            return self.min_lr
        ratio = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.max_lr - self.min_lr)


class linear_warmup_linear_decay(Schedule):  # noqa: N801
    """The same warmup as warmup_cosine, then a straight line from max_lr (at warmup_steps) to min_lr (at
    decay_steps), then min_lr."""

    kind = "linear_warmup_linear_decay"
    _fields = ("max_lr", "warmup_steps", "decay_steps", "min_lr")

    __init__ = warmup_cosine.__init__

    def _lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(self.max_lr, self.warmup_steps, step)
        if step > self.decay_steps:
            return self.min_lr
        ratio = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        return self.max_lr + ratio * (self.min_lr - self.max_lr)


class inverse_sqrt(Schedule):  # noqa: N801
    """"Attention Is All You Need": lr = scale * d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5) with
    s = step + 1 (the paper counts steps from 1); the peak is at step = warmup_steps - 1."""

    kind = "inverse_sqrt"
    _fields = ("d_model", "warmup_steps", "scale")

    def __init__(self, d_model: int, warmup_steps: int, scale: float = 1.0):
        self.d_model = _int("d_model", d_model, self.kind, minimum=1)
        self.warmup_steps = _int("warmup_steps", warmup_steps, self.kind, minimum=1)
        self.scale = _number("scale", scale, self.kind)

    def _lr(self, step: int) -> float:
        s = step + 1
        return self.scale * self.d_model**-0.5 * min(s**-0.5, s * self.warmup_steps**-1.5)


SCHEDULES = {cls.kind: cls for cls in (constant, warmup_cosine, linear_warmup_linear_decay, inverse_sqrt)}


def schedule_from_dict(d: dict) -> Schedule:
    """Rebuild a schedule from its ``to_dict()``."""
    if not isinstance(d, dict) or d.get("kind") not in SCHEDULES:
        raise ValueError(f"schedule_from_dict: unknown schedule {d!r}; known kinds are {sorted(SCHEDULES)}")
    args = {k: v for k, v in d.items() if k != "kind"}
    return SCHEDULES[d["kind"]](**args)
