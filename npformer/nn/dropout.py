"""Dropout as a layer: active in training mode with p > 0, the identity otherwise."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..kernels import ops
from .module import Module


class Dropout(Module):
    """Inverted dropout.  x: any shape.

    The masks come from one generator per layer (``backend.Generator``), kept across steps. It is made at the first
    training forward, on x's backend, from the next seed of ``seeds``, a host stream seeded with ``seed``.
    ``restart(seed)`` starts a fresh generator (the data-parallel replicas do so every step, with seeds drawn from
    the model's own stream, so no two replicas repeat a mask). What follows:
    - the state is plain data on either backend (``rng_state`` / ``set_rng_state``): checkpoints resume exactly;
    - a forward can be replayed with the same mask (``replay_last()``: activation recomputation runs a block's
      forward again in its backward), by setting the generator back to where that forward began;
    - on a GPU no generator is built per forward.
    """

    caches = ("_cache",)  # what forward keeps for backward (Module.drop_caches)

    def __init__(self, p: float = 0.0, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self.seeds = np.random.default_rng(seed)  # host stream: the seed of each generator this layer starts
        self.generator = None  # made at the first training forward, on x's backend
        self._next_seed = None  # the seed restart() chose for the next generator
        self._before_last = None  # the generator's state before the last forward drew its mask
        self._replay = False
        self._cache = None

    def reset(self) -> None:
        """Back to the state the layer was built in: the next masks are the first ones again."""
        self.seeds = np.random.default_rng(self.seed)
        self.restart()

    def restart(self, seed: int | None = None) -> None:
        """The next forward draws from a fresh generator seeded with ``seed`` (default: the next of ``seeds``)."""
        self.generator = None
        self._next_seed = None if seed is None else int(seed)

    def replay_last(self) -> None:
        """Make the next forward reuse the mask of the last one."""
        self._replay = self._before_last is not None

    def _generator_for(self, x) -> backend.Generator:
        name = "numpy" if backend.on_host(x) else "cupy"
        if self.generator is None or self.generator.backend != name:
            seed = self._next_seed if self._next_seed is not None else int(self.seeds.integers(0, 2**62))
            self._next_seed = None
            self.generator = backend.Generator(seed, backend=name)
        return self.generator

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._cache = None
            return x
        generator = self._generator_for(x)
        if self._replay:
            generator.set_state(self._before_last)
        else:
            self._before_last = generator.get_state()
        self._replay = False
        y, self._cache = ops.dropout_forward(x, self.p, generator)
        return y

    def backward(self, dy):
        if self._cache is None:
            return dy
        dx = ops.dropout_backward(dy, self._cache)
        self._cache = None
        return dx

    # -- state (checkpoints) -------------------------------------------------------------------------------------
    def rng_state(self) -> dict:
        """The seed stream's and the generator's states, JSON-able."""
        gen = self.generator
        return {"seeds": self.seeds.bit_generator.state, "next_seed": self._next_seed,
                "generator": None if gen is None else {"backend": gen.backend, "state": gen.get_state()}}

    def set_rng_state(self, state: dict) -> None:
        """Continue from ``rng_state()``'s output (a checkpoint written before generators were kept, which held
        the seed stream's state alone, is accepted too)."""
        if "bit_generator" in state:  # the older format: the seed stream only
            self.seeds.bit_generator.state = state
            self.restart()
            return
        self.seeds.bit_generator.state = state["seeds"]
        self.restart(state.get("next_seed"))
        saved = state.get("generator")
        if saved is not None:
            self.generator = backend.Generator(0, backend=saved["backend"])
            self.generator.set_state(saved["state"])
