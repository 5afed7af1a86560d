"""Numerical gradient checking: compare a hand-written backward pass with central finite differences in float64.

Three entry points, from the smallest unit to the largest:

``check_gradients(forward, backward, inputs, wrt=...)``
    for a functional pair ``y, cache = forward(**inputs)`` / ``grads = backward(dy, cache)``.
``check_layer(layer, *inputs)``
    for a module with ``forward(*inputs) -> y`` and ``backward(dy) -> dx`` that accumulates into its
    parameters' ``.grad`` (npformer's layers, or your own).
``check_model(loss_fn, backward_fn, parameters)``
    for anything that computes a scalar loss from parameters (a whole model).

How it works: a random upstream gradient ``dy`` (fixed per check) turns any output into the scalar
``L = sum(y * dy)``, whose gradient with respect to an input x is exactly what ``backward(dy)`` returns. Each
element of x is nudged by +/- eps and ``dL/dx`` is estimated as ``(L(x + eps) - L(x - eps)) / (2 eps)``; the error
of that estimate is O(eps^2), about 1e-10 relative with eps = 1e-6 in float64.

Every report lists, per input and per parameter, the max absolute error and the max relative error, where the
relative error is normwise: ``max|analytic - numeric| / max(max|numeric|, max|analytic|)``, which does not blow
up on elements that happen to be near zero. A tensor passes when its relative error is at most ``rtol`` or its
absolute error at most ``atol``.

Example::

    from npformer import functional as F
    from npformer.gradcheck import check_gradients
    report = check_gradients(F.layernorm_forward, F.layernorm_backward,
                             dict(x=x, w=w, b=b), wrt=("x", "w", "b"))
    print(report)          # a table, one row per tensor
    report.assert_ok()     # raises GradcheckError naming the tensors that failed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from . import backend

DEFAULT_EPS = 1e-6
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-8


class GradcheckError(AssertionError):
    """A backward pass disagreed with finite differences beyond the tolerances."""


@dataclass
class TensorReport:
    name: str
    shape: tuple
    max_abs_err: float
    max_rel_err: float
    passed: bool


@dataclass
class GradcheckReport:
    """Per-tensor comparison of analytic and numerical gradients."""

    rtol: float
    atol: float
    tensors: list[TensorReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tensors)

    @property
    def max_rel_err(self) -> float:
        return max((t.max_rel_err for t in self.tensors), default=0.0)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        width = max([len(t.name) for t in self.tensors] + [6])
        lines = [f"{'tensor':<{width}}  {'shape':<16} {'max abs err':>12} {'max rel err':>12}  result"]
        for t in self.tensors:
            lines.append(
                f"{t.name:<{width}}  {str(t.shape):<16} {t.max_abs_err:12.3e} {t.max_rel_err:12.3e}  "
                f"{'ok' if t.passed else 'FAIL'}"
            )
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict} (rtol={self.rtol:g}, atol={self.atol:g})")
        return "\n".join(lines)

    def assert_ok(self) -> GradcheckReport:
        """Raise GradcheckError with the table if any tensor failed; return self otherwise."""
        if not self.passed:
            failed = ", ".join(t.name for t in self.tensors if not t.passed)
            raise GradcheckError(f"gradient check failed for {failed}\n{self}")
        return self


def compare(name: str, analytic, numeric, rtol: float, atol: float) -> TensorReport:
    """Compare one analytic gradient with its numerical estimate (both moved to the host in float64)."""
    a = backend.to_numpy(analytic).astype(np.float64)
    n = backend.to_numpy(numeric).astype(np.float64)
    if a.shape != n.shape:
        raise GradcheckError(f"{name}: analytic gradient has shape {a.shape}, expected {n.shape}")
    if a.size == 0:
        return TensorReport(name, n.shape, 0.0, 0.0, True)
    abs_err = float(np.max(np.abs(a - n)))
    scale = max(float(np.max(np.abs(n))), float(np.max(np.abs(a))))
    rel_err = abs_err / scale if scale > 0 else 0.0
    ok = bool(np.all(np.isfinite(a))) and (rel_err <= rtol or abs_err <= atol)
    return TensorReport(name, n.shape, abs_err, rel_err, ok)


def _sum_weighted(y, dy) -> float:
    """L = sum(y * dy) in float64, on the host."""
    if dy is None:  # scalar output (a loss): L = y
        return float(backend.to_numpy(y).astype(np.float64).sum())
    return float(np.sum(backend.to_numpy(y).astype(np.float64) * backend.to_numpy(dy).astype(np.float64)))


def numerical_gradient(f: Callable[[], float], x, eps: float = DEFAULT_EPS):
    """Central-difference gradient of the scalar ``f()`` with respect to array ``x``, nudged in place.

    x must be a float64 array (of either backend); it is restored exactly after each nudge.
    Returns a NumPy float64 array of x's shape.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_grad = grad.reshape(-1)
    flat_x = x.reshape(-1)  # a view: writing into it nudges x
    for i in range(flat_x.shape[0]):
        old = float(flat_x[i])
        flat_x[i] = old + eps
        f_plus = f()
        flat_x[i] = old - eps
        f_minus = f()
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def _as_float64(value):
    """Float arrays become contiguous float64 copies on the active backend; anything else passes through."""
    mod = backend.array_module(value)
    if isinstance(value, (np.ndarray, mod.ndarray)) and value.dtype.kind == "f":
        return backend.xp().ascontiguousarray(backend.asarray(value, dtype=np.float64))
    return value


def check_gradients(
    forward: Callable,
    backward: Callable,
    inputs: dict,
    wrt: Sequence[str],
    *,
    dy=None,
    output_index: int | None = None,
    eps: float = DEFAULT_EPS,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> GradcheckReport:
    """Check a functional forward/backward pair against central finite differences, in float64.

    forward:  ``y, cache = forward(**inputs)``.
    backward: ``grads = backward(dy, cache)``; a single array, or a tuple whose entries line up with ``wrt``
              (an entry may be None for an input that has no gradient, which is then skipped).
    inputs:   keyword arguments for forward. Float arrays are converted to float64 copies; the rest
              (integer ids, masks, options) pass through unchanged.
    wrt:      names of the inputs to differentiate, in the order backward returns their gradients.
    dy:       the upstream gradient; by default a seeded standard-normal array of y's shape, or 1.0 when y is a
              scalar (a loss).
    output_index: if forward's y is a tuple of outputs, which one to check.

    Returns a GradcheckReport; call ``.assert_ok()`` to raise on failure.
    """
    with backend.float64():
        args = {k: _as_float64(v) for k, v in inputs.items()}
        for name in wrt:
            if name not in args:
                raise ValueError(f"check_gradients: wrt names {name!r}, which is not among the inputs {list(args)}")

        def run():
            y, cache = forward(**args)
            if output_index is not None:
                y = y[output_index]
            return y, cache

        y, cache = run()
        if dy is None:
            if y.ndim == 0:
                dy = 1.0
            else:
                host = np.random.default_rng(seed).standard_normal(tuple(y.shape))
                dy = backend.to_backend_of(host, y)  # where the output lives
        else:
            dy = _as_float64(dy)
        grads = backward(dy, cache)
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)
        if len(grads) != len(wrt):
            raise ValueError(f"check_gradients: backward returned {len(grads)} gradients, wrt names {len(wrt)}")

        dy_for_sum = None if isinstance(dy, float) else dy
        report = GradcheckReport(rtol, atol)
        for name, g in zip(wrt, grads):
            if g is None:
                continue
            numeric = numerical_gradient(lambda: _sum_weighted(run()[0], dy_for_sum), args[name], eps)
            report.tensors.append(compare(name, g, numeric, rtol, atol))
        return report


def check_model(
    loss_fn: Callable[[], object],
    backward_fn: Callable[[], object],
    parameters: Iterable,
    *,
    inputs: dict | None = None,
    input_grads: Callable[[], dict] | None = None,
    eps: float = DEFAULT_EPS,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> GradcheckReport:
    """Check every parameter gradient of a model (or layer) that computes a scalar loss.

    loss_fn:     runs the forward pass and returns the scalar loss (array or float).
    backward_fn: runs the backward pass after a loss_fn call, filling each parameter's ``.grad``.
    parameters:  (name, param) pairs such as ``model.named_parameters()``, where ``param.data`` is the array the
                 forward reads and ``param.grad`` the gradient backward accumulates into. The model must already
                 be in float64 (build it inside ``with backend.float64():``).
    inputs:      optional {name: float64 array} that loss_fn reads, to be checked too, with ``input_grads()``
                 returning {name: gradient} after backward_fn.
    """
    params = list(parameters)
    for name, p in params:
        if p.data.dtype != np.float64:
            raise ValueError(f"check_model: parameter {name} is {p.data.dtype}; build the model in float64")
    for _, p in params:
        p.grad[...] = 0
    loss_fn()
    backward_fn()
    analytic = {name: backend.to_numpy(p.grad).copy() for name, p in params}
    analytic_inputs = input_grads() if input_grads is not None else {}

    def scalar() -> float:
        return _sum_weighted(loss_fn(), None)

    report = GradcheckReport(rtol, atol)
    for name, p in params:
        numeric = numerical_gradient(scalar, p.data, eps)
        report.tensors.append(compare(name, analytic[name], numeric, rtol, atol))
    for name, x in (inputs or {}).items():
        numeric = numerical_gradient(scalar, x, eps)
        report.tensors.append(compare(f"input:{name}", analytic_inputs[name], numeric, rtol, atol))
    return report


def check_layer(layer, *inputs, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, eps: float = DEFAULT_EPS,
                seed: int = 0, **forward_kwargs) -> GradcheckReport:
    """Check a layer's input gradient(s) and every parameter gradient.

    layer:  has ``forward(*inputs, **forward_kwargs) -> y``, ``backward(dy) -> dx`` (or a tuple of dx, one per
            float input) and ``named_parameters()``; built in float64.
    inputs: arrays for forward. Float ones are checked (converted to float64); integer ones pass through.
    """
    with backend.float64():
        args = [_as_float64(x) for x in inputs]
        float_positions = [i for i, x in enumerate(args) if getattr(x, "dtype", None) is not None
                           and x.dtype.kind == "f"]
        y0 = layer.forward(*args, **forward_kwargs)
        host = np.random.default_rng(seed).standard_normal(tuple(y0.shape))
        dy = backend.to_backend_of(host, y0)  # where the layer's output lives
        captured = {}

        def loss_fn():
            return _sum_weighted(layer.forward(*args, **forward_kwargs), dy)

        def backward_fn():
            dx = layer.backward(dy)
            if not isinstance(dx, (tuple, list)):
                dx = (dx,)
            captured["dx"] = dx

        def input_grads():
            dx = captured["dx"]
            return {f"x{i}": dx[j] for j, i in enumerate(float_positions) if j < len(dx) and dx[j] is not None}

        names = {f"x{i}": args[i] for i in float_positions}
        report = check_model(loss_fn, backward_fn, layer.named_parameters(), inputs=None,
                             rtol=rtol, atol=atol, eps=eps)
        # inputs: checked after parameters, with the captured dx of the same backward call
        grads = input_grads()
        for name, x in names.items():
            if name not in grads:
                continue
            numeric = numerical_gradient(loss_fn, x, eps)
            report.tensors.append(compare(f"input:{name}", grads[name], numeric, rtol, atol))
        return report
