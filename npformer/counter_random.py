"""A counter-based random stream: draw i of a stream is a hash of (key, i), so its whole state is two integers.

Why: a GPU generator's state lives on the device (cuRAND's XORWOW states: megabytes, not exposed as data), so it
can be neither checkpointed nor replayed, and making a fresh one for every dropout mask costs a setup kernel each
time. A counter-based stream (the idea behind Philox and JAX's keys) needs neither: it is kept across steps, its
state (key, counter) saves to JSON, and jumping back to replay a mask is setting the counter. Each draw is a few
elementwise integer operations on whatever array module holds the output, NumPy or CuPy alike.

The hash is Chris Wellons' "lowbias32" 32-bit mixer applied twice (once per 32-bit half of the 64-bit index),
keyed by the seed: not for cryptography, amply uniform for dropout masks and token sampling.
"""

from __future__ import annotations

import numpy as np

_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """lowbias32: a bijective avalanche mix of uint32 values (x: uint32 array, modified and returned)."""
    x ^= x >> 16
    x *= 0x7FEB352D
    x ^= x >> 15
    x *= 0x846CA68B
    x ^= x >> 16
    return x


class CounterStream:
    """Draws on the array module ``xp`` from a seed; ``state`` / ``set_state`` are plain JSON data."""

    def __init__(self, xp, seed: int | None = None):
        self.xp = xp
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(2, np.uint64)[0])
        seed = int(seed)
        # two 32-bit keys from the seed, mixed so that nearby seeds give unrelated streams
        keys = _mix32(np.array([seed & _MASK32, (seed >> 32) & _MASK32, 0x9E3779B9], dtype=np.uint32))
        self.keys = [int(k) for k in keys]
        self.seed = seed
        self.counter = 0  # draws made so far (a Python int: no device sync to read it)

    def _bits(self, n: int):
        """n uint32 hash values for draws counter .. counter + n - 1; advances the counter."""
        xp = self.xp
        index = xp.arange(n, dtype=np.uint64) + np.uint64(self.counter)
        lo = (index & np.uint64(_MASK32)).astype(np.uint32)
        hi = (index >> np.uint64(32)).astype(np.uint32)
        self.counter += n
        h = _mix32(lo ^ np.uint32(self.keys[0]))
        h ^= hi
        h ^= np.uint32(self.keys[1])
        return _mix32(h)

    def random(self, shape, dtype=np.float64):
        """Uniform [0, 1) of ``shape``: 24 random bits for float32, 53 for float64."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64))
        h = self._bits(n)
        if dtype == np.float32:
            u = (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)
        else:
            h2 = _mix32(h ^ np.uint32(self.keys[2]))  # 32 more bits from the same index
            u = ((h >> np.uint32(5)).astype(np.float64) * 67108864.0 + (h2 >> np.uint32(6)).astype(np.float64))
            u *= 2.0**-53
            u = u.astype(dtype, copy=False)
        return u.reshape(shape)

    def integers(self, low: int, high: int, shape):
        """Integers uniform in [low, high) as int64 (from a float64 uniform: bias below 2^-53 per value)."""
        u = self.random(shape, np.float64)
        return (self.xp.floor(u * (high - low)) + low).astype(np.int64)

    def standard_normal(self, shape, dtype=np.float64):
        """Normal(0, 1) by the Box-Muller transform of two uniforms, computed in float64."""
        xp = self.xp
        u1 = 1.0 - self.random(shape, np.float64)  # in (0, 1]: log is finite
        u2 = self.random(shape, np.float64)
        return (xp.sqrt(-2.0 * xp.log(u1)) * xp.cos(2.0 * np.pi * u2)).astype(dtype, copy=False)

    def state(self) -> dict:
        return {"kind": "counter", "seed": self.seed, "counter": self.counter}

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("kind") != "counter":
            raise ValueError(f"CounterStream.set_state: not a counter-stream state: {state!r}")
        self.__init__(self.xp, int(state["seed"]))
        self.counter = int(state["counter"])
