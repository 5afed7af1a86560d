"""Optimizers (SGD, AdamW), gradient clipping and gradient scaling, with PyTorch's update rules.

An optimizer takes what ``Module.named_parameters()`` yields, a list of Parameters, or a list of parameter-group
dicts like torch's ``[{"params": [...], "weight_decay": 0.0}, ...]`` (``param_groups`` builds nanoGPT's two
groups: decay for matrices, none for biases and norm weights)::

    opt = AdamW(param_groups(model.named_parameters(), weight_decay=0.1), lr=6e-4, betas=(0.9, 0.95))
    for step in range(max_steps):
        opt.set_lr(schedule(step))
        opt.zero_grad()
        for micro in range(accum_steps):            # gradient accumulation: backward adds into p.grad (+=),
            loss, dlogits = ...                     # so scale the loss gradient by 1 / accum_steps
            model.backward(dlogits / accum_steps)   # (or call scale_grads(params, 1 / accum_steps) once after)
        norm = clip_grad_norm(model.parameters(), 1.0)   # a 0-d array: no host sync on a GPU
        opt.step()

Updates happen in place (SGD: ``out=`` ufuncs through one shared scratch buffer per (backend, dtype); AdamW: through
the kernel dispatch, whose fast tier works in cache-sized blocks and makes no parameter-sized temporaries); moments are
kept in the parameter's dtype and every scalar is a Python float, so float32 parameters stay float32. After
``model.flatten_parameters()`` each parameter group is one buffer and AdamW, ``grad_norm`` and ``clip_grad_norm``
work on it in a few whole-buffer passes instead of a loop over dozens of small arrays (GPT models are flat from
the start). The same code runs on NumPy and CuPy (the module comes from each parameter's array). Create the
optimizer after the model has its final backend and dtype: its buffers copy them.

State: ``state_dict()`` is a flat dict: JSON-able scalars (``kind``, ``step``, ``param_groups`` with their
hyperparameters and parameter names) plus host NumPy arrays under ``"<buffer>/<parameter name>"`` (for example
``"exp_avg/blocks.0.attn.w"``); ``load_state_dict`` checks it fits and says everything that does not.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..kernels import ops
from ..state import state_mismatches


# ---------------------------------------------------------------------------------------------------------------
# flat buffers: parameters that tile one contiguous buffer (Module.flatten_parameters) are updated in one go
# ---------------------------------------------------------------------------------------------------------------
def _address(a) -> int:
    """The address of an array's first element (NumPy or CuPy)."""
    if backend.array_module(a) is np:
        return a.__array_interface__["data"][0]
    return a.data.ptr


def _span(arrays, in_order: bool = False):
    """If ``arrays`` are C-contiguous views that exactly tile one stretch of one 1-D buffer, that stretch as a 1-D
    view; else None. With ``in_order`` the tiles must also follow each other in the order given."""
    if not arrays:
        return None
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    for a in arrays:
        if a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous:
            return None
    tiles = [(_address(a), a.nbytes) for a in arrays]
    if not in_order:
        tiles.sort()
    start = end = tiles[0][0]
    for address, nbytes in tiles:
        if address != end:
            return None
        end += nbytes
    lo = (start - _address(base)) // base.itemsize
    return base[lo:lo + (end - start) // base.itemsize]


# ---------------------------------------------------------------------------------------------------------------
# parameters and groups
# ---------------------------------------------------------------------------------------------------------------


def _named(items, where: str, start: int = 0) -> list[tuple[str, object]]:
    """Parameters, (name, Parameter) pairs, a {name: Parameter} dict or a Module -> [(name, Parameter)].
    Parameters given without a name are named by their position (``str(start + i)``)."""
    if hasattr(items, "named_parameters"):
        items = items.named_parameters()
    elif isinstance(items, dict):
        items = items.items()
    out = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, p = item
        else:
            name, p = str(start + i), item
        if not (hasattr(p, "data") and hasattr(p, "grad")):
            raise TypeError(f"{where}: entry {name!r} is a {type(p).__name__}, not a Parameter")
        out.append((name, p))
    return out


def _is_group(x) -> bool:
    """A parameter-group dict ({"params": [...], ...}) as opposed to a {name: Parameter} dict."""
    return isinstance(x, dict) and "params" in x and not hasattr(x["params"], "grad")


def _params_only(params, where: str) -> list:
    return [p for _, p in _named(params, where)]


def param_groups(named_parameters, weight_decay: float) -> list[dict]:
    """nanoGPT's recipe: parameters marked ``no_decay`` (biases, norm weights, anything 1-D by default) in a
    group with weight_decay 0, the rest (matrices, embeddings) in a group with ``weight_decay``.

    named_parameters: what ``Module.named_parameters()`` yields, a {name: Parameter} dict, or a Module.
    Returns a list of group dicts for ``SGD`` / ``AdamW`` (empty groups left out).
    """
    if not weight_decay >= 0.0:
        raise ValueError(f"param_groups: weight_decay must be >= 0, got {weight_decay}")
    named = _named(named_parameters, "param_groups")
    decay = [(n, p) for n, p in named if not getattr(p, "no_decay", p.data.ndim < 2)]
    no_decay = [(n, p) for n, p in named if getattr(p, "no_decay", p.data.ndim < 2)]
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Optimizer:
    """Base class: parameter groups, learning rate, zero_grad, scratch buffers and state dicts.

    Subclasses set ``_buffers`` (names of the per-parameter state arrays), ``_hyper`` (group hyperparameter
    names) and implement ``_check_hyper`` and ``_update_group``.
    """

    _buffers: tuple[str, ...] = ()
    _hyper: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict):
        name = type(self).__name__
        self._check_hyper(defaults, name)
        self.base_lr = float(defaults["lr"])
        if isinstance(params, dict):  # one group dict, or {name: Parameter}
            params = [params] if _is_group(params) else list(params.items())
        params = list(params.named_parameters()) if hasattr(params, "named_parameters") else list(params)
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        raw_groups = params if all(_is_group(g) for g in params) else [{"params": params}]
        self.param_groups: list[dict] = []
        seen: dict[int, str] = {}
        names: set[str] = set()
        count = 0
        for gi, raw in enumerate(raw_groups):
            where = f"{name}: parameter group {gi}"
            unknown = sorted(set(raw) - {"params", "lr", "lr_scale", *self._hyper})
            if unknown:
                raise ValueError(f"{where} has unknown keys {unknown}; valid keys are "
                                 f"{sorted({'params', 'lr', 'lr_scale', *self._hyper})}")
            if "params" not in raw:
                raise ValueError(f"{where} has no 'params' entry")
            named = _named(raw["params"], where, start=count)
            count += len(named)
            for pname, p in named:
                if id(p) in seen:
                    raise ValueError(f"{where}: parameter {pname!r} appears more than once (also as {seen[id(p)]!r})")
                if pname in names:
                    raise ValueError(f"{where}: two parameters are named {pname!r}")
                if np.dtype(p.data.dtype).kind != "f":
                    raise TypeError(f"{where}: parameter {pname!r} has dtype {p.data.dtype}, not a float dtype")
                seen[id(p)] = pname
                names.add(pname)
            group = {k: defaults[k] for k in self._hyper}
            group.update({k: raw[k] for k in self._hyper if k in raw})
            if "lr" in raw and "lr_scale" in raw:
                raise ValueError(f"{where} gives both 'lr' and 'lr_scale'; give one")
            if "lr_scale" in raw:
                scale = float(raw["lr_scale"])
            elif "lr" in raw:
                if self.base_lr == 0.0:
                    raise ValueError(f"{where} gives 'lr' but the optimizer's lr is 0, so its scale is undefined; "
                                     "give 'lr_scale' instead")
                scale = float(raw["lr"]) / self.base_lr
            else:
                scale = 1.0
            group["lr_scale"] = scale
            group["lr"] = self.base_lr * scale
            self._check_hyper(group, where)
            group["names"] = [n for n, _ in named]
            group["params"] = [p for _, p in named]
            self.param_groups.append(group)
        self.step_count = 0
        # per-parameter state, created now (zeros) so state_dict() is complete before the first step
        self.state: dict[str, dict[str, object]] = {}
        for group in self.param_groups:
            for pname, p in zip(group["names"], group["params"]):
                xp = backend.array_module(p.data)
                self.state[pname] = {b: xp.zeros_like(p.data) for b in self._buffers}
        self._scratch: dict[tuple, object] = {}
        self._flat: dict[int, tuple] = {}  # group index -> (the arrays checked, their flat spans or None)

    # -- learning rate --------------------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The base learning rate; each group runs at ``lr * its lr_scale``."""
        return self.base_lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.set_lr(value)

    def set_lr(self, lr: float) -> None:
        """Set the base learning rate for every group (keeping each group's lr_scale): a schedule calls this."""
        lr = float(lr)
        if not lr >= 0.0:
            raise ValueError(f"{type(self).__name__}.set_lr: lr must be >= 0, got {lr}")
        self.base_lr = lr
        for group in self.param_groups:
            group["lr"] = lr * group["lr_scale"]

    # -- stepping -------------------------------------------------------------------------------------------
    def parameters(self) -> list:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    def _scratch_for(self, p):
        """A view of shape p.shape into one flat scratch buffer shared by all parameters of this backend/dtype."""
        xp = backend.array_module(p.data)
        key = (xp.__name__, np.dtype(p.data.dtype).str)
        buf = self._scratch.get(key)
        if buf is None or buf.size < p.data.size:
            size = max(q.data.size for q in self.parameters()
                       if backend.array_module(q.data) is xp and q.data.dtype == p.data.dtype)
            buf = xp.empty((size,), dtype=p.data.dtype)
            self._scratch[key] = buf
        return buf[: p.data.size].reshape(p.data.shape)

    def _flat_spans(self, gi: int, group: dict):
        """{"param": ..., "grad": ..., buffer: ...}: 1-D views covering the whole group, lined up element for
        element, when its parameters and gradients tile one buffer each (Module.flatten_parameters); else None.

        The first time it finds flat parameters it moves the group's state buffers into one flat buffer each, in
        the parameters' memory order (values kept; ``self.state`` then holds views). The answer is cached until
        some parameter's ``data`` or ``grad`` is replaced by another array."""
        arrays = tuple(a for p in group["params"] for a in (p.data, p.grad))
        cached = self._flat.get(gi)
        if cached is not None and len(cached[0]) == len(arrays) and all(a is b for a, b in zip(cached[0], arrays)):
            return cached[1]
        spans = None
        order = sorted(zip(group["names"], group["params"]), key=lambda item: _address(item[1].data))
        param_span = _span([p.data for _, p in order], in_order=True)
        grad_span = _span([p.grad for _, p in order], in_order=True)
        if param_span is not None and grad_span is not None:
            spans = {"param": param_span, "grad": grad_span}
            for b in self._buffers:
                bufs = [self.state[name][b] for name, _ in order]
                span = _span(bufs, in_order=True)
                if span is None:  # lay this state buffer out flat, in the parameters' order
                    xp = backend.array_module(param_span)
                    span = xp.empty_like(param_span)
                    offset = 0
                    for (name, _), old in zip(order, bufs):
                        view = span[offset:offset + old.size].reshape(old.shape)
                        view[...] = old
                        self.state[name][b] = view
                        offset += old.size
                spans[b] = span
        self._flat[gi] = (arrays, spans)
        return spans

    def step(self) -> None:
        """Apply one update to every parameter from its ``.grad``."""
        self.step_count += 1
        for gi, group in enumerate(self.param_groups):
            self._update_group(group, self._flat_spans(gi, group))

    def _update_group(self, group: dict, flat) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _check_hyper(h: dict, where: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"kind", "step", "base_lr", "param_groups": [...JSON-able...], "<buffer>/<name>": host array, ...}."""
        groups = []
        for g in self.param_groups:
            entry = {k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in (*self._hyper, "lr_scale")}
            entry["params"] = list(g["names"])
            groups.append(entry)
        out: dict = {"kind": type(self).__name__, "step": int(self.step_count), "base_lr": float(self.base_lr),
                     "param_groups": groups}
        for pname, bufs in self.state.items():
            for b, arr in bufs.items():
                out[f"{b}/{pname}"] = backend.to_numpy(arr).copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore step count, group hyperparameters and buffers from ``state_dict()`` output (as torch does,
        the saved hyperparameters replace the current ones). Checks the kind, the groups, and every buffer's
        presence, shape and dtype, and raises one ValueError listing everything that does not fit."""

        name = type(self).__name__
        problems = []
        if state.get("kind") != name:
            problems.append(f"the state is for {state.get('kind')!r}, this optimizer is {name!r}")
        for key in ("step", "base_lr", "param_groups"):
            if key not in state:
                problems.append(f"missing entry {key!r}")
        saved_groups = state.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            problems.append(f"{len(saved_groups)} parameter groups in the state, {len(self.param_groups)} here")
        else:
            for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
                if list(sg.get("params", [])) != g["names"]:
                    problems.append(f"group {gi}: parameters {sg.get('params')} in the state, {g['names']} here")
                missing = [k for k in (*self._hyper, "lr_scale") if k not in sg]
                if missing:
                    problems.append(f"group {gi}: missing hyperparameters {missing}")
        expected = {f"{b}/{pname}": (tuple(arr.shape), np.dtype(arr.dtype))
                    for pname, bufs in self.state.items() for b, arr in bufs.items()}
        arrays = {k: v for k, v in state.items() if k not in ("kind", "step", "base_lr", "param_groups")}
        problems += state_mismatches(expected, arrays)
        if not problems:
            for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
                try:
                    hyper = {k: (tuple(sg[k]) if isinstance(g[k], tuple) else sg[k])
                             for k in (*self._hyper, "lr_scale")}
                    self._check_hyper(hyper, f"group {gi}")
                except (ValueError, TypeError) as exc:
                    problems.append(str(exc))
        if problems:
            raise ValueError(f"{name}.load_state_dict: the state does not fit this optimizer; " + "; ".join(problems))
        for sg, g in zip(saved_groups, self.param_groups):
            for k in (*self._hyper, "lr_scale"):
                g[k] = tuple(float(x) for x in sg[k]) if isinstance(g[k], tuple) else sg[k]
        self.step_count = int(state["step"])
        self.base_lr = float(state["base_lr"])
        for pname, bufs in self.state.items():
            for b, arr in bufs.items():
                arr[...] = backend.array_module(arr).asarray(state[f"{b}/{pname}"], dtype=arr.dtype)

    def __repr__(self) -> str:
        groups = ", ".join("{" + ", ".join(f"{k}={g[k]}" for k in self._hyper) + f", n_params={len(g['params'])}}}"
                           for g in self.param_groups)
        return f"{type(self).__name__}(step={self.step_count}, groups=[{groups}])"


def _check_nonneg(h: dict, keys, where: str) -> None:
    for k in keys:
        v = h[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0.0 or math.isinf(v):
            raise ValueError(f"{where}: {k} must be a finite number >= 0, got {v!r}")


# ---------------------------------------------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------------------------------------------
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (torch.optim.SGD with
    dampening 0)::

        d = g + weight_decay * p
        buf = momentum * buf + d          (buf starts at 0, so the first buf is d, as in torch)
        d = d + momentum * buf  if nesterov  else  buf   (when momentum > 0)
        p = p - lr * d
    """

    _buffers = ("momentum_buffer",)
    _hyper = ("lr", "momentum", "weight_decay", "nesterov")

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        self._buffers = ("momentum_buffer",) if momentum != 0.0 or _any_group_has(params, "momentum") else ()
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @staticmethod
    def _check_hyper(h: dict, where: str) -> None:
        _check_nonneg(h, ("lr", "momentum", "weight_decay"), where)
        if not isinstance(h["nesterov"], bool):
            raise TypeError(f"{where}: nesterov must be a bool, got {h['nesterov']!r}")
        if h["nesterov"] and h["momentum"] <= 0.0:
            raise ValueError(f"{where}: Nesterov momentum needs momentum > 0, got {h['momentum']}")

    def _update_group(self, group: dict, flat) -> None:
        lr, mu, wd = float(group["lr"]), float(group["momentum"]), float(group["weight_decay"])
        for pname, p in zip(group["names"], group["params"]):
            xp = backend.array_module(p.data)
            s = self._scratch_for(p)
            d = p.grad
            if wd != 0.0:  # d = g + wd * p
                xp.multiply(p.data, wd, out=s)
                s += p.grad
                d = s
            if mu != 0.0:
                buf = self.state[pname]["momentum_buffer"]
                buf *= mu  # buf = mu * buf + d
                buf += d
                if group["nesterov"]:  # p -= lr * (d + mu * buf), as two in-place steps through s
                    xp.multiply(d, -lr, out=s)
                    p.data += s
                    xp.multiply(buf, -lr * mu, out=s)
                    p.data += s
                    continue
                d = buf
            xp.multiply(d, -lr, out=s)  # p -= lr * d
            p.data += s


def _any_group_has(params, key: str) -> bool:
    """True when a parameter-group dict among ``params`` sets ``key`` to something nonzero."""
    if _is_group(params):
        return bool(params.get(key, 0.0))
    if isinstance(params, (list, tuple)):
        return any(_is_group(g) and g.get(key, 0.0) for g in params)
    return False


# ---------------------------------------------------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------------------------------------------------


class AdamW(Optimizer):
    """Adam with decoupled weight decay (torch.optim.AdamW, amsgrad off). At step t (from 1)::

        p = p - lr * weight_decay * p                  (decoupled decay, before the Adam step)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
    """

    _buffers = ("exp_avg", "exp_avg_sq")
    _hyper = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _check_hyper(h: dict, where: str) -> None:
        _check_nonneg(h, ("lr", "eps", "weight_decay"), where)
        betas = h["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}: betas must be a pair (b1, b2), got {betas!r}")
        for i, b in enumerate(betas):
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b < 1.0:
                raise ValueError(f"{where}: betas[{i}] must be in [0, 1), got {b!r}")
        h["betas"] = (float(betas[0]), float(betas[1]))

    def _update_group(self, group: dict, flat) -> None:
        b1, b2 = group["betas"]
        hyper = dict(lr=float(group["lr"]), beta1=b1, beta2=b2, eps=float(group["eps"]),
                     weight_decay=float(group["weight_decay"]), step=self.step_count)
        if flat is not None:  # the whole group is one buffer: one update over it
            ops.adamw_update(flat["param"], flat["grad"], flat["exp_avg"], flat["exp_avg_sq"], **hyper)
            return
        for pname, p in zip(group["names"], group["params"]):
            state = self.state[pname]
            ops.adamw_update(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], **hyper)


# ---------------------------------------------------------------------------------------------------------------
# gradient clipping and scaling
# ---------------------------------------------------------------------------------------------------------------
def grad_norm(params):
    """The global L2 norm of all gradients, as a 0-d array on the parameters' backend (no host sync)."""
    grads = [p.grad for p in _params_only(params, "grad_norm")]
    flat = _span(grads)
    total = None
    for g in [flat] if flat is not None else grads:  # one dot over a flat buffer, else one per gradient
        xp = backend.array_module(g)
        g = g.reshape(-1)
        sq = xp.dot(g, g)  # sum of squares of this gradient, in its dtype, without a g*g temporary
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("grad_norm: got no parameters")
    return backend.array_module(total).sqrt(total)


def clip_grad_norm(params, max_norm: float):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm`` (torch's clip_grad_norm_:
    coef = max_norm / (norm + 1e-6), applied when below 1). Returns the norm before clipping as a 0-d array on the
    gradients' backend, as torch returns a tensor: on a GPU this makes no device-to-host sync.

    On the host the decision is a Python ``if`` (free there: nothing is multiplied when nothing is clipped, and a
    non-finite norm leaves the gradients untouched for the caller to skip the step). On a device the gradients are
    multiplied by min(1, coef) computed there, with no sync (by exactly 1.0 when nothing is clipped); a
    non-finite norm then makes the gradients non-finite, which the caller's next check of the loss finds."""
    max_norm = float(max_norm)
    if not max_norm > 0.0 or math.isinf(max_norm):
        raise ValueError(f"clip_grad_norm: max_norm must be a finite number > 0, got {max_norm}")
    params = _params_only(params, "clip_grad_norm")
    norm = grad_norm(params)
    xp = backend.array_module(norm)
    grads = [p.grad for p in params]
    flat = _span(grads)
    if xp is np:
        value = float(norm)
        if not math.isfinite(value) or max_norm / (value + 1e-6) >= 1.0:
            return np.asarray(norm)
        coef = max_norm / (value + 1e-6)
    else:
        coef = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    for g in [flat] if flat is not None else grads:
        g *= coef
    return xp.asarray(norm)


def scale_grads(params, scale: float) -> None:
    """Multiply every gradient by ``scale`` in place (for example 1 / accumulation steps, once after the last
    micro-batch's backward, instead of scaling each micro-batch's loss gradient)."""
    scale = float(scale)
    for p in _params_only(params, "scale_grads"):
        p.grad *= scale
