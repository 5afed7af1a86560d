"""The one switch between the two tiers: ``ops.NAME`` is the active tier's implementation of NAME.

    npformer.set_kernels("reference")          # every op from npformer.functional, the code to read
    npformer.set_kernels("fast")               # the default: npformer.kernels' version where there is one
    NPFORMER_KERNELS=reference python train.py
    with use_kernels("reference"): ...         # for a block, on this thread only

Layers call ``ops.layernorm_forward(...)`` and never choose a tier themselves. A model whose config names a tier
(``GPTConfig(kernels="reference")``) runs its forward and backward under it (``use_kernels``), whatever the
process-wide setting. A forward and its backward must run in the same tier: a few caches differ between tiers.
"""

from __future__ import annotations

import contextlib
import os
import threading

from .. import functional as reference
from . import activations, adamw, attention, fused_loss, norms

KERNEL_TIERS = ("reference", "fast")

# The fast tier's versions; every other op is the reference's in both tiers.
_FAST_OVERRIDES = {
    "layernorm_forward": norms.layernorm_forward, "layernorm_backward": norms.layernorm_backward,
    "rmsnorm_forward": norms.rmsnorm_forward, "rmsnorm_backward": norms.rmsnorm_backward,
    "gelu_forward": activations.gelu_forward, "gelu_backward": activations.gelu_backward,
    "attention_forward": attention.attention_forward, "attention_backward": attention.attention_backward,
    "lm_head_cross_entropy_forward": fused_loss.lm_head_cross_entropy_forward,
    "lm_head_cross_entropy_backward": fused_loss.lm_head_cross_entropy_backward,
    "adamw_update": adamw.adamw_update,
}
_TABLES = {
    "reference": {name: getattr(reference, name) for name in reference.__all__},
}
_TABLES["fast"] = {**_TABLES["reference"], **_FAST_OVERRIDES}
FAST_OPS = tuple(sorted(_FAST_OVERRIDES))

_default = "fast"
_local = threading.local()  # .tier: this thread's override (use_kernels), None when unset


def _check(name) -> str:
    if not isinstance(name, str) or name not in KERNEL_TIERS:
        raise ValueError(f"unknown kernel tier {name!r}; valid tiers are: {', '.join(KERNEL_TIERS)}")
    return name


def set_kernels(name: str) -> None:
    """Make ``name`` ("reference" or "fast") the tier every thread uses unless it is inside ``use_kernels``."""
    global _default
    _default = _check(name)


def get_kernels() -> str:
    """The tier this thread's ops come from now."""
    return getattr(_local, "tier", None) or _default


@contextlib.contextmanager
def use_kernels(name: str | None):
    """Use tier ``name`` on this thread inside the block (None: leave the tier as it is)."""
    if name is None:
        yield
        return
    previous = getattr(_local, "tier", None)
    _local.tier = _check(name)
    try:
        yield
    finally:
        _local.tier = previous


class _Ops:
    """``ops.NAME``: the active tier's NAME (looked up at each call, so a switch takes effect at once)."""

    def __getattr__(self, name: str):
        try:
            return _TABLES[get_kernels()][name]
        except KeyError:
            raise AttributeError(f"npformer.kernels.ops has no op {name!r}; the ops are: "
                                 f"{', '.join(sorted(_TABLES['reference']))}") from None

    def __dir__(self):
        return sorted(_TABLES["reference"])


ops = _Ops()


def implementation(name: str, tier: str):
    """The function behind op ``name`` in ``tier`` (tests compare the tiers through this)."""
    return _TABLES[_check(tier)][name]


_env = os.environ.get("NPFORMER_KERNELS")
if _env:
    set_kernels(_env.strip().lower())
