"""The switch between tiers: set_kernels, NPFORMER_KERNELS, use_kernels (per thread), a model config's field,
and clear errors for unknown tiers and ops."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import npformer
from npformer import functional as reference
from npformer.kernels import FAST_OPS, dispatch, get_kernels, implementation, ops, set_kernels, use_kernels
from npformer.models import GPT, GPTConfig


def test_default_is_fast_and_set_kernels_switches_every_op():
    assert get_kernels() == "fast"
    assert ops.layernorm_forward is implementation("layernorm_forward", "fast")
    set_kernels("reference")
    assert npformer.get_kernels() == "reference"
    for name in reference.__all__:
        assert getattr(ops, name) is getattr(reference, name), name
    set_kernels("fast")
    for name in FAST_OPS:
        assert getattr(ops, name) is not getattr(reference, name), name


def test_unknown_tier_and_op_are_named():
    with pytest.raises(ValueError, match="unknown kernel tier 'quick'; valid tiers are: reference, fast"):
        set_kernels("quick")
    with pytest.raises(AttributeError, match="no op 'layer_norm_forward'; the ops are: .*layernorm_forward"):
        ops.layer_norm_forward  # noqa: B018
    with pytest.raises(ValueError, match="GPTConfig: kernels must be one of"):
        GPTConfig(kernels="quick")


def test_use_kernels_is_per_thread_and_restores():
    seen = {}
    with use_kernels("reference"):
        assert get_kernels() == "reference"
        t = threading.Thread(target=lambda: seen.setdefault("other", get_kernels()))
        t.start()
        t.join()
        with use_kernels(None):  # None leaves the tier alone
            assert get_kernels() == "reference"
    assert seen["other"] == "fast" and get_kernels() == "fast"


def test_environment_variable_is_read_at_import():
    code = "import npformer; print(npformer.get_kernels())"
    env = dict(os.environ, NPFORMER_KERNELS="reference", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "reference"
    env["NPFORMER_KERNELS"] = "nope"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "unknown kernel tier 'nope'" in bad.stderr


@pytest.mark.parametrize("pinned, process_wide", [("reference", "fast"), ("fast", "reference"), (None, "reference")])
def test_a_model_config_pins_its_tier(monkeypatch, pinned, process_wide):
    """GPTConfig(kernels=...) runs the model's forward and backward in that tier whatever set_kernels says."""
    used = set()
    for tier in ("fast", "reference"):
        real = dispatch._TABLES[tier]["layernorm_backward"]
        monkeypatch.setitem(dispatch._TABLES[tier], "layernorm_backward",
                            lambda *a, _t=tier, _r=real, **k: used.add(_t) or _r(*a, **k))
    set_kernels(process_wide)
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4, kernels=pinned))
    ids = np.zeros((1, 4), dtype=np.int64)
    model.loss(ids, ids)
    model.backward()
    assert used == {pinned or process_wide}
