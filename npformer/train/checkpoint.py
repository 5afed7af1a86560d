"""Checkpoints: one ``.npz`` file holding numeric arrays and a JSON document, written atomically, read safely.

Layout of the file (a plain NumPy ``.npz`` zip, readable with ``np.load(path)``)::

    param/<name>    one array per model parameter        (Module.state_dict())
    optim/<key>     the array entries of the optimizer's state dict
    meta.json       uint8 bytes of a UTF-8 JSON document:
                    {"format": "npformer-checkpoint", "format_version": 1,
                     "meta": {... config, tokenizer, step, sampler state ...},
                     "optimizer": {... the optimizer state dict's non-array entries ...} or null}

Safety: files are read with ``np.load(..., allow_pickle=False)`` only, so a crafted file cannot run code; object
arrays, non-numeric arrays, unknown entries, a truncated zip and a wrong format version all raise
``CheckpointError`` with what is wrong. Writing goes to a temporary file in the same directory, is flushed and
fsynced, then renamed over the target with ``os.replace``: a crash leaves either the old file or the new one.

    save_checkpoint("ckpt.npz", params=model.state_dict(), meta={"config": ..., "step": step},
                    optimizer=opt.state_dict())
    ckpt = load_checkpoint("ckpt.npz")
    model.load_state_dict(ckpt.params); opt.load_state_dict(ckpt.optimizer)
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..io.atomic import atomic_open
from ..state import state_mismatches

FORMAT = "npformer-checkpoint"
FORMAT_VERSION = 1
PARAM_PREFIX = "param/"
OPTIM_PREFIX = "optim/"
META_ENTRY = "meta.json"
NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, corrupt, unsafe, or of another format version."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: host NumPy arrays and plain JSON data."""

    params: dict[str, np.ndarray]
    meta: dict
    optimizer: dict | None


# ---------------------------------------------------------------------------------------------------------------
# checking a state against what is expected
# ---------------------------------------------------------------------------------------------------------------
def check_state_against(expected: dict, state: dict, where: str = "state") -> None:
    """Raise CheckpointError listing everything in ``state`` that does not fit ``expected`` ({name: (shape,
    dtype)}), all in one message. (``Module.load_state_dict`` runs the same check on a model.)"""
    problems = state_mismatches(expected, state)
    if problems:
        raise CheckpointError(f"{where}: does not fit; " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------------------------
def _json_default(obj):
    if isinstance(obj, np.generic):  # NumPy scalars (a float32 loss, an int64 step) become Python numbers
        return obj.item()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON-serializable")


def _check_array(name: str, value, what: str) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"save_checkpoint: {what} {name!r} is a {type(value).__name__}, not a NumPy array "
                        "(move device arrays to the host with backend.to_numpy first)")
    if value.dtype.kind not in NUMERIC_KINDS:
        raise TypeError(f"save_checkpoint: {what} {name!r} has dtype {value.dtype}; only numeric arrays are saved")


def save_checkpoint(path, *, params: dict, meta: dict, optimizer: dict | None = None) -> None:
    """Write params (host arrays), meta (JSON-able dict) and optionally an optimizer state dict (host arrays plus
    JSON-able scalars) to ONE ``.npz`` file at ``path``, atomically: the previous file at ``path`` is replaced
    only once the new one is completely on disk."""
    if not isinstance(params, dict):
        raise TypeError(f"save_checkpoint: params must be a dict of name -> array, got {type(params).__name__}")
    if not isinstance(meta, dict):
        raise TypeError(f"save_checkpoint: meta must be a dict, got {type(meta).__name__}")
    if optimizer is not None and not isinstance(optimizer, dict):
        raise TypeError(f"save_checkpoint: optimizer must be a dict or None, got {type(optimizer).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"save_checkpoint: parameter names must be non-empty strings, got {name!r}")
        _check_array(name, value, "parameter")
        arrays[PARAM_PREFIX + name] = value
    optim_scalars = None
    if optimizer is not None:
        optim_scalars = {}
        for key, value in optimizer.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"save_checkpoint: optimizer keys must be non-empty strings, got {key!r}")
            if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
                _check_array(key, value, "optimizer entry")
                arrays[OPTIM_PREFIX + key] = value
            else:
                optim_scalars[key] = value
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta, "optimizer": optim_scalars}
    try:
        text = json.dumps(doc, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_checkpoint: meta / optimizer scalars are not JSON-serializable: {exc}") from exc
    arrays[META_ENTRY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    with atomic_open(path, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; never unpickles. Raises CheckpointError for a missing
    file, a file that is not a complete .npz, a missing or invalid meta.json, another format version, and any
    entry that is pickled (object dtype), non-numeric or unknown."""
    path = os.fspath(path)
    where = f"load_checkpoint: {path!r}"
    if not os.path.exists(path):
        raise CheckpointError(f"{where}: no such file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{where}: not a file")
    return _load(path, where)


def load_checkpoint_bytes(data: bytes, name: str = "<bytes>") -> Checkpoint:
    """``load_checkpoint`` of a file's contents already in memory (an MPI rank that received them from rank 0,
    say); ``name`` is what error messages call it."""
    import io

    return _load(io.BytesIO(bytes(data)), f"load_checkpoint: {name!r}")


def _load(path, where: str) -> Checkpoint:
    """The checks and parsing of ``load_checkpoint``; ``path``: a file name or a binary file object."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{where}: not a .npz (zip) file, or truncated")
    if hasattr(path, "seek"):
        path.seek(0)  # is_zipfile read the end of it
    entries: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                try:
                    entries[name] = npz[name]
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise CheckpointError(f"{where}: entry {name!r} holds pickled Python objects (object "
                                              "dtype); refusing to load it, a checkpoint holds only numeric "
                                              "arrays") from exc
                    raise
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise CheckpointError(f"{where}: corrupt or truncated ({type(exc).__name__}: {exc})") from exc

    if META_ENTRY not in entries:
        raise CheckpointError(f"{where}: no {META_ENTRY} entry; not an npformer checkpoint")
    raw = entries.pop(META_ENTRY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{where}: {META_ENTRY} must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: {META_ENTRY} is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{where}: {META_ENTRY} does not describe an npformer checkpoint")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {version!r}, but this npformer reads version "
                              f"{FORMAT_VERSION}")
    meta, optim_scalars = doc.get("meta"), doc.get("optimizer")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: meta must be a JSON object, got {type(meta).__name__}")
    if optim_scalars is not None and not isinstance(optim_scalars, dict):
        raise CheckpointError(f"{where}: optimizer must be a JSON object or null, got {type(optim_scalars).__name__}")

    params, optim_arrays, problems = {}, {}, []
    for name, arr in entries.items():
        if arr.dtype.kind not in NUMERIC_KINDS:
            problems.append(f"{name} has non-numeric dtype {arr.dtype}")
        elif name.startswith(PARAM_PREFIX) and len(name) > len(PARAM_PREFIX):
            params[name[len(PARAM_PREFIX):]] = arr
        elif name.startswith(OPTIM_PREFIX) and len(name) > len(OPTIM_PREFIX):
            optim_arrays[name[len(OPTIM_PREFIX):]] = arr
        else:
            problems.append(f"unknown entry {name!r}")
    if optim_arrays and optim_scalars is None:
        problems.append("optimizer arrays present but no optimizer scalars in meta.json")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    optimizer = None if optim_scalars is None else {**optim_scalars, **optim_arrays}
    return Checkpoint(params=params, meta=meta, optimizer=optimizer)
