"""The sweep's results: one JSON file (the data it was measured on, the plan, every finished run) and a CSV of the
runs beside it, both written atomically (npformer.io.atomic), so that a crash never leaves half a file.

    results = load_results("out/scaling/results.json")     # None when there is none yet
    results["runs"].append(record); save_results(path, results)
"""

from __future__ import annotations

import csv
import json
import math
import os

from ..io.atomic import SHARED, atomic_open

VERSION = 1
RECORD_FIELDS = ("name", "n_layer", "n_embd", "n_head", "block_size", "batch_size", "steps", "learning_rate",
                 "seed", "vocab_size", "N", "N_total", "D", "C", "C_attn", "flops", "val_loss", "val_tokens",
                 "train_loss", "wall_s", "workers")
NUMBER_FIELDS = ("N", "D", "C", "val_loss", "wall_s")


def new_results(data: dict, request: dict, plan: list[dict], mode: str, jobs: int) -> dict:
    """A sweep's results before any run: the data's description, the request, the plan (spec and predicted
    seconds per run), how it runs (mode, jobs)."""
    return dict(version=VERSION, data=data, request=request, plan=plan, mode=mode, jobs=jobs, runs=[])


def _corrupt(path: str, why: str) -> ValueError:
    return ValueError(f"{path}: the results file is corrupt ({why}); delete it to start the sweep over, or give "
                      "another --out-dir")


def check_record(record, where: str) -> None:
    """ValueError naming ``where`` and the field when a run record lacks a field or holds a non-number where a
    positive finite number belongs."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a run record must be a mapping, got {type(record).__name__}")
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    for name in NUMBER_FIELDS:
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: {name} must be a positive finite number, got {value!r}")


def load_results(path: str) -> dict | None:
    """The results at ``path``, checked; None when the file does not exist. A file that is not JSON, or lacks
    what a sweep writes, is a ValueError that names the file and what is wrong."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(results, dict):
        raise _corrupt(path, f"a JSON {type(results).__name__}, not an object")
    missing = [k for k in ("version", "data", "request", "plan", "mode", "jobs", "runs") if k not in results]
    if missing:
        raise _corrupt(path, f"no {', '.join(missing)}")
    if results["version"] != VERSION:
        raise _corrupt(path, f"version {results['version']!r}, this npformer reads version {VERSION}")
    if not isinstance(results["runs"], list) or not isinstance(results["plan"], list):
        raise _corrupt(path, "runs and plan must be lists")
    for i, entry in enumerate(results["plan"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), dict) \
                or not isinstance(entry.get("predicted_s"), (int, float)):
            raise _corrupt(path, f"plan entry {i} is not {{spec, predicted_s}}")
    for i, record in enumerate(results["runs"]):
        try:
            check_record(record, f"run {i}")
        except ValueError as exc:
            raise _corrupt(path, str(exc)) from None
    return results


def save_results(path: str, results: dict) -> None:
    """Write ``results`` as JSON at ``path`` and its runs as CSV beside it (same name, .csv), atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8", permissions=SHARED) as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with atomic_open(os.path.splitext(path)[0] + ".csv", "w", encoding="utf-8", newline="",
                     permissions=SHARED) as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(results["runs"], key=lambda r: (r["N"], r["D"])))
