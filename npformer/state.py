"""Checking a dict of arrays (a model's or an optimizer's state) against the names, shapes and dtypes expected.

Shared by ``Module.load_state_dict``, the optimizers and the checkpoint reader, so every one of them says all
that does not fit in the same words.
"""

from __future__ import annotations

import numpy as np


def state_mismatches(expected: dict, state: dict) -> list[str]:
    """Every way ``state`` ({name: array}) differs from ``expected`` ({name: (shape, dtype)}): missing and
    unexpected names, wrong shapes, wrong dtypes. An empty list means it fits."""
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(state)):
        shape, dtype = expected[name]
        value = state[name]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            problems.append(f"{name}: a {type(value).__name__} in the state, not an array")
        elif tuple(value.shape) != tuple(shape):
            problems.append(f"{name}: shape {tuple(value.shape)} in the state, {tuple(shape)} expected")
        elif np.dtype(value.dtype) != np.dtype(dtype):
            problems.append(f"{name}: dtype {np.dtype(value.dtype)} in the state, {np.dtype(dtype)} expected")
    return problems
