"""One model's size as one dictionary (what ``--json`` prints) and as a table a person reads."""

from __future__ import annotations

from .counting import (
    COMPONENTS,
    count_params,
    count_params_active,
    flops_per_token,
    kv_cache_bytes_per_token,
    kv_cache_window,
    params_by_component,
    training_memory,
)
from .shapes import ModelShape

DEFAULT_CONTEXT = 2048  # for a model without a longest context (RoPE, T5's relative positions)


def size_report(shape: ModelShape, batch_size: int = 1, context: int | None = None, dtype: str = "float32",
                kv_dtype: str | None = None, flash: bool | None = None) -> dict:
    """Everything the calculator knows about ``shape`` at (batch_size, context), as JSON-able data.

    context: tokens per sequence (default: the model's longest context, else 2048). dtype: of parameters,
    gradients, optimizer state and activations. kv_dtype: of the KV cache (default: dtype). A sliding-window
    model's report also has ``kv_cache_window``: the most positions its KV cache holds per sequence.
    """
    for name, value in (("batch_size", batch_size), ("context", context)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"size: {name} must be a positive integer, got {value!r}")
    T = context or shape.max_positions or DEFAULT_CONTEXT
    if shape.max_positions is not None and T > shape.max_positions:
        raise ValueError(f"size: context {T} exceeds {shape.name}'s longest context of {shape.max_positions} tokens")
    flops = flops_per_token(shape, T)
    kv = kv_cache_bytes_per_token(shape, kv_dtype or dtype)
    report = {
        "model": shape.name,
        "kind": shape.kind,
        "params": count_params(shape),
        "params_by_component": params_by_component(shape),
        "params_active": count_params_active(shape),
        "context": T,
        "batch_size": batch_size,
        "dtype": dtype,
        "flops_per_token_forward": flops["forward"],
        "flops_per_token_training": flops["training"],
        "flops_per_token_training_recompute": flops["training_recompute"],
        "memory_training_bytes": training_memory(shape, batch_size, T, dtype, flash),
        "kv_cache_dtype": kv_dtype or dtype,
        "kv_cache_bytes_per_token": kv["self"],
        "cross_kv_cache_bytes_per_source_token": kv["cross"],
        "notes": list(shape.notes),
    }
    window = kv_cache_window(shape)
    if window is not None:  # a sliding-window model's cache holds at most W positions per sequence
        report["kv_cache_window"] = window
    return report


def _count(n: int) -> str:
    """124439808 -> '124.44M (124,439,808)'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit} ({n:,})"
    return f"{n:,}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _flops(n: int) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("KFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} FLOP"


def format_report(r: dict) -> str:
    """The report as an aligned table."""
    rows = [("model", f"{r['model']} ({r['kind']})"), ("parameters", _count(r["params"]))]
    rows += [(f"  {c.replace('_', '-')}", _count(r["params_by_component"][c])) for c in COMPONENTS]
    rows.append(("active parameters per token", _count(r["params_active"])))
    rows.append((f"FLOPs per token, forward (T={r['context']})", _flops(r["flops_per_token_forward"])))
    rows.append(("FLOPs per token, training", _flops(r["flops_per_token_training"])))
    rows.append(("  with recomputation", _flops(r["flops_per_token_training_recompute"])))
    m = r["memory_training_bytes"]
    rows.append((f"training memory (B={r['batch_size']}, T={r['context']}, {r['dtype']})", ""))
    for key, label in (("parameters", "parameters"), ("gradients", "gradients"), ("adamw", "AdamW state"),
                       ("activations", "activations"), ("activations_recompute", "activations, recomputed"),
                       ("total", "total"), ("total_recompute", "total with recomputation")):
        rows.append((f"  {label}", _bytes(m[key])))
    rows.append((f"KV cache per token ({r['kv_cache_dtype']})", _bytes(r["kv_cache_bytes_per_token"])
                 if r["kv_cache_bytes_per_token"] is not None else "- (an encoder does not generate)"))
    if r.get("kv_cache_window") is not None and r["kv_cache_bytes_per_token"] is not None:
        W = r["kv_cache_window"]
        rows.append((f"  sliding window: at most {W:,} positions", _bytes(W * r["kv_cache_bytes_per_token"])
                     + " per sequence"))
    if r["cross_kv_cache_bytes_per_source_token"] is not None:
        rows.append(("  cross-attention, per source token", _bytes(r["cross_kv_cache_bytes_per_source_token"])))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines += [f"note: {note}" for note in r["notes"]]
    return "\n".join(lines)
