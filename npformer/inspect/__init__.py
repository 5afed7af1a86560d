"""Seeing inside a model: attention maps and activations from a forward pass, per-head summaries, gradient flow,
and pictures of them (``npformer.inspect.plots``, which needs matplotlib: pip install 'npformer[plot]').

    from npformer.inspect import attention_maps, head_summary
    maps = attention_maps(model, ids)            # (L, B, H, T, T), the reference maths, NumPy arrays
    rows = head_summary(maps)                    # entropy, attended distance, previous-/first-token heads

Nothing here runs while training unless asked: capture hooks are set for one forward and removed after, and the
trainer records gradient flow only at the steps it logs (npformer.inspect.gradient_flow).
"""

from .capture import BlockActivations, Capture, attention_maps, block_activations, capture_forward, model_stacks
from .summaries import format_head_table, head_summary

__all__ = ["BlockActivations", "Capture", "attention_maps", "block_activations", "capture_forward",
           "format_head_table", "head_summary", "model_stacks"]
