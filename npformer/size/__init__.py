"""The model-size calculator: parameters by component, active parameters, FLOPs per token, training memory and
the KV cache, for npformer's configs, Hugging Face config.json files and famous models by name.

    from npformer.size import size_of
    report = size_of("gpt2")                              # a named model (npformer.size.presets)
    report = size_of(GPTConfig(n_layer=6, n_embd=384))    # an npformer config
    report = size_of("path/to/config.json", batch_size=8, context=1024)
    report["params"], report["flops_per_token_forward"], report["memory_training_bytes"]["total"]

    python -m npformer.size gpt2 llama-2-7b               # tables; --json for one JSON object per model

The formulas are in npformer/size/counting.py's docstring.
"""

from __future__ import annotations

import os

from .counting import count_params, count_params_active, flops_per_token, kv_cache_bytes_per_token, training_memory
from .hf_configs import MODEL_TYPES, read_hf_config, shape_from_hf_config
from .npformer_configs import config_from_dict, shape_of
from .presets import PRESET_NAMES, preset_shape
from .report import format_report, size_report
from .shapes import ModelShape


def model_shape(model) -> ModelShape:
    """A ModelShape from any description: a ModelShape, an npformer config, a built npformer model (its
    ``config``), a preset name, a path to a Hugging Face config.json, or a config dict (with ``model_type``: Hugging
    Face's; else npformer's)."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        if model in PRESET_NAMES:
            return preset_shape(model)
        if os.path.exists(model) or model.endswith(".json"):
            return read_hf_config(model)
        return preset_shape(model)  # an unknown name: the error lists the named models
    if isinstance(model, dict):
        return shape_from_hf_config(model) if "model_type" in model else shape_of(config_from_dict(model))
    return shape_of(getattr(model, "config", model))


def size_of(model, batch_size: int = 1, context: int | None = None, dtype: str = "float32",
            kv_dtype: str | None = None) -> dict:
    """The calculator's report (``npformer.size.report.size_report``) for any description ``model_shape`` takes."""
    return size_report(model_shape(model), batch_size=batch_size, context=context, dtype=dtype, kv_dtype=kv_dtype)


__all__ = ["MODEL_TYPES", "PRESET_NAMES", "ModelShape", "count_params", "count_params_active", "flops_per_token",
           "format_report", "kv_cache_bytes_per_token", "model_shape", "preset_shape", "read_hf_config",
           "shape_from_hf_config", "shape_of", "size_of", "size_report", "training_memory"]
