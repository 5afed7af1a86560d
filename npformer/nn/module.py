"""Parameters and the one base class every layer and model shares.

A ``Parameter`` holds ``data`` (the array the forward pass reads) and ``grad`` (where backward passes add their
gradient with ``+=``, so a weight used twice, like tied embeddings, just sums both uses).

A ``Module`` finds its parameters and sub-modules by looking at its attributes (and lists of modules), so a
layer only has to assign them: ``self.w = Parameter(...)``, ``self.blocks = [Block(...), ...]``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import backend
from ..state import state_mismatches


class Parameter:
    """A trainable array and its gradient, on the active backend.

    data: any shape, float; grad: same shape and dtype, zero until a backward pass adds into it.
    ``no_decay`` marks parameters (biases, norm weights, by default anything 1-D) that AdamW's
    parameter groups keep out of weight decay.
    """

    __slots__ = ("data", "grad", "no_decay")

    def __init__(self, data, no_decay: bool | None = None):
        self.data = data
        self.grad = backend.array_module(data).zeros_like(data)  # beside its data, on the same backend
        self.no_decay = data.ndim < 2 if no_decay is None else no_decay

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class: parameter discovery, gradients zeroing, state dicts, train/eval mode.

    A subclass declares in ``caches`` the attributes where its forward keeps what its backward needs; those are
    what ``drop_caches`` forgets and what a data-parallel replica does not copy. Nothing else a module holds
    between calls may depend on the last forward's input.
    """

    training: bool = True
    caches: tuple[str, ...] = ()  # attribute names: what the last forward saved for backward

    # -- discovery ------------------------------------------------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter) for every parameter, each object once (tied weights appear once,
        under the name where they were first found)."""
        seen: set[int] = set()
        for name, p in self._walk(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _walk(self, prefix: str):
        for attr, value in vars(self).items():
            full = f"{prefix}{attr}"
            if isinstance(value, Parameter):
                yield full, value
            elif isinstance(value, Module):
                yield from value._walk(full + ".")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item._walk(f"{full}.{i}.")
                    elif isinstance(item, Parameter):
                        yield f"{full}.{i}", item

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        yield self
        for value in vars(self).values():
            if isinstance(value, Module):
                yield from value.modules()
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, Module):
                        yield from item.modules()

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def flatten_parameters(self) -> int:
        """Move every parameter's data (and gradient) into one contiguous buffer, each Parameter's ``data`` and
        ``grad`` becoming a view of its slice; returns the number of elements.

        Nothing else changes: values are copied over, ``p.data`` / ``p.grad`` are still arrays of the same shape
        and dtype that layers read and ``+=`` into. What it buys is speed: the optimizers, ``grad_norm`` and
        ``clip_grad_norm`` notice parameters that tile one buffer and update them with a handful of calls over
        the whole buffer instead of a dozen calls per parameter. Parameters are laid out with those that take
        weight decay first (``param_groups``' order), so each parameter group is one slice. Create the optimizer
        afterwards or before, either works; a later ``astype`` un-flattens (the per-parameter path then runs).
        """
        params = self.parameters()
        ordered = [p for p in params if not p.no_decay] + [p for p in params if p.no_decay]
        if not ordered:
            return 0
        xp = backend.array_module(*(p.data for p in ordered))
        dtype = ordered[0].data.dtype
        if any(p.data.dtype != dtype for p in ordered):
            kinds = sorted({str(p.data.dtype) for p in ordered})
            raise ValueError(f"flatten_parameters: the parameters have several dtypes {kinds}; one buffer needs one")
        total = sum(p.size for p in ordered)
        data = xp.empty((total,), dtype=dtype)
        grad = xp.zeros((total,), dtype=dtype)
        offset = 0
        for p in ordered:
            n = p.size
            view = data[offset:offset + n].reshape(p.data.shape)
            view[...] = p.data
            gview = grad[offset:offset + n].reshape(p.data.shape)
            gview[...] = p.grad
            p.data, p.grad = view, gview
            offset += n
        self._flat_grads = (ordered, grad)  # for zero_grad
        return total

    # -- gradients and modes --------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        flat = getattr(self, "_flat_grads", None)
        if flat is not None and all(p.grad.base is flat[1] for p in flat[0]):
            flat[1][...] = 0  # flattened (and still so): one fill instead of one per parameter
            return
        for p in self.parameters():
            p.zero_grad()

    def drop_caches(self) -> None:
        """Forget what the last forward saved for backward (every attribute its class declares in ``caches``), in
        this module and all below it: activation recomputation calls this right after a forward."""
        for m in self.modules():
            for attr in m.caches:
                setattr(m, attr, None)

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: NumPy array on the host} for every parameter (a copy: safe to save or modify)."""
        return {name: backend.to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters, checking names, shapes and dtypes; say everything that does not fit.

        strict=False loads the names both sides have and ignores the rest (shapes and dtypes are still checked).
        """
        own = dict(self.named_parameters())
        expected = {name: (p.data.shape, p.data.dtype) for name, p in own.items()}
        if not strict:
            expected = {name: e for name, e in expected.items() if name in state}
            state = {name: value for name, value in state.items() if name in own}
        problems = state_mismatches(expected, state)
        if problems:
            raise ValueError("load_state_dict: the state does not fit the model; " + "; ".join(problems))
        for name in expected:  # each array goes to its parameter's backend (a host state for a device model)
            data = own[name].data
            data[...] = backend.to_backend_of(state[name], data).astype(data.dtype, copy=False)

    def astype(self, dtype) -> "Module":
        """Convert every parameter (and its gradient) to ``dtype`` in place; returns self."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        return self
