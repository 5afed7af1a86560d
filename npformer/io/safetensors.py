"""The safetensors format, read and written with NumPy alone (no torch, no safetensors package).

A file is three parts, back to back::

    N        8 bytes, little-endian unsigned: the length of the header
    header   N bytes of UTF-8 JSON (padded with spaces):
             {"<name>": {"dtype": "F32", "shape": [768, 2304], "data_offsets": [begin, end]}, ...,
              "__metadata__": {"format": "pt", ...}}          (optional; strings to strings)
    buffer   the tensors' raw little-endian bytes; offsets count from the buffer's first byte

The tensors tile the buffer: sorted by offset, each begins where the previous one ended, the first at 0 and the
last at the end of the file, and each spans exactly prod(shape) * itemsize bytes (the rules of the reference
implementation). Reading checks all of that before any tensor is made, so a truncated file, a header that lies
about offsets or sizes, overlapping tensors, an unknown dtype or an absurd header size is a ``SafetensorsError``
naming the problem; nothing in the file is ever executed (the header is JSON, the buffer raw numbers).

    tensors = load_safetensors("model.safetensors")          # {name: read-only array, memory-mapped}
    save_safetensors("out.safetensors", tensors, metadata={"format": "pt"})
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct

import numpy as np

from .atomic import SHARED, atomic_open

# safetensors dtype -> NumPy dtype (little-endian). BF16 is read as its raw 16 bits and widened to float32.
DTYPES = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "BF16": np.dtype("<u2"),
}
# dtypes the format has but NumPy cannot hold: named in the error instead of "unknown"
NOT_IN_NUMPY = ("F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", "C128")
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit; a real header is a few hundred kB
NUMPY_TO_CODE = {np.dtype(v).newbyteorder("<") if np.dtype(v).itemsize > 1 else np.dtype(v): k
                 for k, v in DTYPES.items() if k != "BF16"}


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read: truncated, inconsistent, or of a dtype NumPy cannot hold."""


# ---------------------------------------------------------------------------------------------------------------
# bfloat16: the upper half of a float32
# ---------------------------------------------------------------------------------------------------------------
def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact: a bfloat16 is a float32 with its low 16 bits zero)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, rounded to nearest, ties to even (NaN stays a quiet NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, (u >> 16) | np.uint32(0x0040), rounded)
    return rounded.astype(np.uint16)


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------
def read_header(path) -> tuple[dict, dict, int]:
    """Parse and check the header of the file at ``path``: ({name: (dtype code, shape, begin, end)}, metadata,
    offset of the buffer in the file). Every rule of the format is checked here; no tensor is read."""
    path = os.fspath(path)
    where = f"safetensors: {path!r}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: no such file")
    if not os.path.isfile(path):
        raise SafetensorsError(f"{where}: not a file")
    size = os.path.getsize(path)
    if size < 8:
        raise SafetensorsError(f"{where}: truncated: {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{where}: the header claims {n:,} bytes, more than the {MAX_HEADER_BYTES:,} "
                                   "a safetensors header may have (not a safetensors file?)")
        if 8 + n > size:
            raise SafetensorsError(f"{where}: truncated: the header claims {n:,} bytes but the file has only "
                                   f"{size - 8:,} after the length")
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, _Duplicate) as exc:
        raise SafetensorsError(f"{where}: the header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SafetensorsError(f"{where}: the header must be a JSON object, got {type(doc).__name__}")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise SafetensorsError(f"{where}: __metadata__ must map strings to strings")
    entries = {name: _check_entry(where, name, info) for name, info in doc.items()}
    _check_tiling(where, entries, size - 8 - n)
    return entries, metadata, 8 + n


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise _Duplicate(f"the name(s) {', '.join(map(repr, dup))} appear more than once")
    return dict(pairs)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_entry(where: str, name: str, info) -> tuple[str, tuple, int, int]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{where}: tensor {name!r}: expected {{dtype, shape, data_offsets}}, got {info!r:.80}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype in NOT_IN_NUMPY:
        raise SafetensorsError(f"{where}: tensor {name!r} has dtype {dtype}, which NumPy cannot hold")
    if dtype not in DTYPES:
        raise SafetensorsError(f"{where}: tensor {name!r} has unknown dtype {dtype!r}; known dtypes are "
                               f"{', '.join(sorted(DTYPES))}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise SafetensorsError(f"{where}: tensor {name!r}: shape must be a list of non-negative integers, got "
                               f"{shape!r:.80}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where}: tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= "
                               f"end, got {offsets!r:.80}")
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise SafetensorsError(f"{where}: tensor {name!r}: shape {tuple(shape)} of {dtype} needs {nbytes:,} bytes "
                               f"but its data_offsets [{begin}, {end}] span {end - begin:,}")
    return dtype, tuple(shape), begin, end


def _check_tiling(where: str, entries: dict, buffer_bytes: int) -> None:
    """The tensors, sorted by offset, cover the buffer exactly: no overlap, no hole, nothing past its end."""
    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if begin < position:
            raise SafetensorsError(f"{where}: tensors {previous!r} and {name!r} overlap (bytes {begin}..{position} "
                                   "of the buffer belong to both)")
        if begin > position:
            raise SafetensorsError(f"{where}: bytes {position}..{begin} of the buffer belong to no tensor (before "
                                   f"{name!r}); the header's offsets do not describe this file")
        if end > buffer_bytes:
            raise SafetensorsError(f"{where}: truncated: tensor {name!r} ends at byte {end:,} of the buffer, which "
                                   f"has only {buffer_bytes:,}")
        position, previous = end, name
    if position != buffer_bytes:
        raise SafetensorsError(f"{where}: {buffer_bytes - position:,} bytes after the last tensor belong to no "
                               "tensor; the header's offsets do not describe this file")


def load_safetensors(path, with_metadata: bool = False):
    """The tensors of a safetensors file: {name: NumPy array} (read-only views of a memory map of the file, so
    nothing is read until used), or ({...}, metadata) with ``with_metadata``. BF16 tensors are widened to
    float32 (that one makes a copy). Raises SafetensorsError for any file that breaks the format's rules."""
    entries, metadata, start = read_header(path)
    tensors = {}
    if entries:
        with open(os.fspath(path), "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # stays alive while an array views it
        for name, (code, shape, begin, end) in entries.items():
            dtype = DTYPES[code]
            count = (end - begin) // dtype.itemsize
            a = np.frombuffer(mm, dtype=dtype, count=count, offset=start + begin).reshape(shape)
            tensors[name] = bfloat16_to_float32(a) if code == "BF16" else a
    return (tensors, metadata) if with_metadata else tensors


def tensor_dtypes(path) -> dict[str, str]:
    """{name: safetensors dtype code} of a file, from its (checked) header alone."""
    entries, _, _ = read_header(path)
    return {name: e[0] for name, e in entries.items()}


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------
def _encode(name: str, value, dtype: str | None) -> tuple[str, np.ndarray]:
    """(dtype code, little-endian C-contiguous array of the bytes to write) for one tensor."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"save_safetensors: tensor {name!r} is a {type(value).__name__}, not a NumPy array (move "
                        "device arrays to the host with backend.to_numpy first)")
    if dtype is not None and value.dtype.kind == "f":  # the requested float dtype applies to float tensors
        if dtype == "BF16":
            return "BF16", float32_to_bfloat16(value.astype(np.float32, copy=False))
        value = value.astype(DTYPES[dtype], copy=False)
    key = value.dtype.newbyteorder("<") if value.dtype.itemsize > 1 else value.dtype
    if key not in NUMPY_TO_CODE:
        raise TypeError(f"save_safetensors: tensor {name!r} has dtype {value.dtype}, which safetensors cannot "
                        f"store; storable: {', '.join(sorted(str(d) for d in NUMPY_TO_CODE))}")
    return NUMPY_TO_CODE[key], np.require(value, dtype=key, requirements="C")  # (0-d arrays stay 0-d)


def save_safetensors(path, tensors: dict, metadata: dict | None = None, dtype: str | None = None) -> None:
    """Write ``tensors`` ({name: NumPy array}) to a safetensors file at ``path``, atomically (a temporary file in
    the same directory, renamed over ``path`` once complete).

    metadata: {str: str}, stored as ``__metadata__`` (transformers expects {"format": "pt"}).
    dtype: None keeps each array's dtype; a float code ("F32", "F16", "BF16", "F64") converts every float tensor
        to it on the way out (integer and boolean tensors are kept as they are).
    """
    if not isinstance(tensors, dict):
        raise TypeError(f"save_safetensors: tensors must be a dict of name -> array, got {type(tensors).__name__}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("save_safetensors: metadata must be a dict of strings to strings")
    if dtype is not None and dtype not in ("F16", "BF16", "F32", "F64"):
        raise ValueError(f"save_safetensors: dtype must be None or one of F16, BF16, F32, F64, got {dtype!r}")
    header, arrays, offset = {}, [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"save_safetensors: tensor names must be non-empty strings other than __metadata__, "
                             f"got {name!r}")
        code, data = _encode(name, tensors[name], dtype)
        header[name] = {"dtype": code, "shape": list(data.shape), "data_offsets": [offset, offset + data.nbytes]}
        arrays.append(data)
        offset += data.nbytes
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad so the buffer starts 8-byte aligned
    with atomic_open(path, "wb", permissions=SHARED) as f:  # a model file is read by others, as transformers' are
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in arrays:
            f.write(memoryview(data.reshape(-1)).cast("B"))
