"""A model config's ``kernels`` field: which tier (npformer.kernels) the model's forward and backward run in.

None (the default) follows the process-wide setting (``npformer.set_kernels``, $NPFORMER_KERNELS; "fast" unless
changed); "reference" or "fast" pins the model to that tier whatever the setting, for every call of a method
wrapped with ``runs_in_config_tier``.
"""

from __future__ import annotations

import functools

from ..kernels import KERNEL_TIERS, use_kernels


def check_kernels_field(value, problems: list) -> None:
    if value is not None and value not in KERNEL_TIERS:
        problems.append(f"kernels must be one of {KERNEL_TIERS} or None (follow npformer.set_kernels), got {value!r}")


def runs_in_config_tier(method):
    """Run ``method`` under the tier ``self.config.kernels`` names (unchanged when it is None)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with use_kernels(self.config.kernels):
            return method(self, *args, **kwargs)

    return wrapper
