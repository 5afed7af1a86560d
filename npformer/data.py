"""Tokenizers, the train/validation split, and a seeded, resumable sampler of (input, target) batches.

    tok = CharTokenizer.from_text(text)            # or ByteTokenizer()
    ids = tok.encode(text)                         # (N,) int64, on the host
    train_ids, val_ids = train_val_split(ids, val_fraction=0.1)
    sampler = BatchSampler(train_ids, block_size=T, batch_size=B, seed=0)
    x, y = sampler.next()                          # (B, T) int64 on the active backend; y is x shifted by one

Token ids live on the host (NumPy) until a batch is drawn; the batch crosses to the active backend at that one
boundary (``backend.asarray``). Offsets come from a seeded NumPy generator on the host, so a seed means the same
batches on every backend, and ``state_dict()`` (JSON-able) lets a resumed run draw exactly the batches an
uninterrupted one would have drawn.
"""

from __future__ import annotations

import numpy as np

from . import backend


def _host_ids(ids, where: str, vocab_size: int | None = None) -> np.ndarray:
    """Token ids (list, NumPy or CuPy array) -> a 1-D NumPy integer array, checked against the vocabulary."""
    arr = backend.to_numpy(ids) if hasattr(ids, "dtype") else np.asarray(list(ids))
    if arr.size == 0:
        return np.zeros((0,), dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{where}: ids must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{where}: ids must be integers, got dtype {arr.dtype}")
    if vocab_size is not None:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{where}: id {bad} is outside the vocabulary [0, {vocab_size})")
    return arr


# ---------------------------------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------------------------------
class CharTokenizer:
    """One id per character; the vocabulary is a list of characters (``from_text`` sorts the unique ones)."""

    kind = "char"

    def __init__(self, chars):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: every vocabulary entry must be one character, got {c!r}")
        if len(set(chars)) != len(chars):
            dup = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"CharTokenizer: repeated characters in the vocabulary: {dup!r}")
        if not chars:
            raise ValueError("CharTokenizer: the vocabulary is empty")
        self.chars = chars
        # encode by binary search over the code points, then map back to ids: vectorised, no Python loop
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)  # (V,) code point of each id
        self._order = np.argsort(self._codes, kind="stable").astype(np.int64)  # ids sorted by code point
        self._sorted = self._codes[self._order]

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The sorted unique characters of ``text`` (like nanoGPT's shakespeare_char)."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.from_text: expected str, got {type(text).__name__}")
        if not text:
            raise ValueError("CharTokenizer.from_text: the text is empty, so there is no vocabulary")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """str -> (N,) int64 ids; a character not in the vocabulary raises ValueError naming it."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: expected str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        pos = np.minimum(np.searchsorted(self._sorted, codes), len(self._sorted) - 1)
        known = self._sorted[pos] == codes
        if not known.all():
            i = int(np.argmin(known))
            c = text[i]
            raise ValueError(f"CharTokenizer.encode: character {c!r} (U+{ord(c):04X}) at position {i} is not in "
                             f"the vocabulary of {self.vocab_size} characters")
        return self._order[pos]

    def decode(self, ids) -> str:
        """(N,) ids (list or array of either backend) -> str."""
        ids = _host_ids(ids, "CharTokenizer.decode", self.vocab_size)
        return self._codes[ids].tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict:
        """JSON-able description, saved with a model: {"kind": "char", "chars": [...]}."""
        return {"kind": self.kind, "chars": list(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("chars"), list):
            raise ValueError(f"CharTokenizer.from_dict: expected {{'kind': 'char', 'chars': [...]}}, got {d!r}")
        return cls(d["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
    """The 256 byte values of the UTF-8 encoding; decoding replaces invalid sequences with U+FFFD."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        """str -> (N,) int64 byte values of its UTF-8 encoding."""
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode: expected str, got {type(text).__name__}")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            c = text[exc.start]
            raise ValueError(f"ByteTokenizer.encode: character U+{ord(c):04X} at position {exc.start} cannot be "
                             "encoded as UTF-8 (a lone surrogate)") from exc
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        """(N,) byte values -> str (invalid UTF-8 becomes U+FFFD)."""
        ids = _host_ids(ids, "ByteTokenizer.decode", self.vocab_size)
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "ByteTokenizer":
        if not isinstance(d, dict) or d.get("kind") != cls.kind:
            raise ValueError(f"ByteTokenizer.from_dict: expected {{'kind': 'byte'}}, got {d!r}")
        return cls()

    def __repr__(self) -> str:
        return "ByteTokenizer()"


TOKENIZERS = {CharTokenizer.kind: CharTokenizer, ByteTokenizer.kind: ByteTokenizer}


def tokenizer_from_dict(d: dict):
    """Rebuild a tokenizer from its ``to_dict()`` (dispatching on d["kind"])."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer_from_dict: unknown tokenizer kind {kind!r}; known kinds are {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].from_dict(d)


# ---------------------------------------------------------------------------------------------------------------
# splitting and sampling
# ---------------------------------------------------------------------------------------------------------------
def train_val_split(ids, val_fraction: float = 0.1, min_length: int = 2):
    """Contiguous split: the first part for training, the last ``val_fraction`` for validation (views, no copy).

    min_length: the shortest part allowed (a sampler with block size T needs T + 1 tokens); ValueError if either
    part would be shorter.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction}")
    if not hasattr(ids, "shape") or len(ids.shape) != 1:
        raise ValueError("train_val_split: ids must be a 1-D array")
    n = int(ids.shape[0])
    n_val = int(round(n * float(val_fraction)))
    n_train = n - n_val
    if n_train < min_length or n_val < min_length:
        raise ValueError(f"train_val_split: {n} tokens split into {n_train} for training and {n_val} for validation, "
                         f"but each part needs at least {min_length}")
    return ids[:n_train], ids[n_train:]


class BatchSampler:
    """Random contiguous windows of a token stream, nanoGPT's get_batch::

        i ~ uniform{0, ..., N - T - 1}  (B of them)
        x[b] = ids[i_b : i_b + T],   y[b] = ids[i_b + 1 : i_b + T + 1]

    ids: (N,) integers on the host (a NumPy array or memmap; never copied whole). block_size: T. batch_size: B.
    vocab_size: when given, every id is checked once here (CuPy would wrap an out-of-range id silently).
    """

    def __init__(self, ids, block_size: int, batch_size: int, seed: int = 0, vocab_size: int | None = None):
        if backend.array_module(ids) is not np:
            raise TypeError("BatchSampler: ids must live on the host (a NumPy array); batches move to the device")
        ids = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if ids.ndim != 1:
            raise ValueError(f"BatchSampler: ids must be 1-D, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"BatchSampler: ids must be integers, got dtype {ids.dtype}")
        for name, v in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"BatchSampler: {name} must be a positive integer, got {v!r}")
        if ids.shape[0] < block_size + 1:
            raise ValueError(f"BatchSampler: {ids.shape[0]} tokens is too short for block_size {block_size} "
                             f"(needs at least {block_size + 1})")
        if vocab_size is not None:
            _host_ids(ids, "BatchSampler", int(vocab_size))
        self.ids = ids
        self.block_size, self.batch_size, self.seed = int(block_size), int(batch_size), int(seed)
        self.batches_drawn = 0
        self._gen = backend.host_rng(self.seed)
        self._window = np.arange(self.block_size + 1, dtype=np.int64)  # (T+1,) offsets inside one window

    def next(self):
        """-> (x, y), each (B, T) int64 on the active backend, with y[:, t] == x[:, t + 1] for t < T - 1."""
        starts = self._gen.integers(0, self.ids.shape[0] - self.block_size, size=self.batch_size, dtype=np.int64)
        chunk = self.ids[starts[:, None] + self._window].astype(np.int64, copy=False)  # (B, T+1)
        self.batches_drawn += 1
        x, y = np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])
        return backend.asarray(x), backend.asarray(y)

    __call__ = next

    def state_dict(self) -> dict:
        """JSON-able: the generator state plus what must match on resume."""
        return {"seed": self.seed, "block_size": self.block_size, "batch_size": self.batch_size,
                "n_tokens": int(self.ids.shape[0]), "batches_drawn": self.batches_drawn,
                "rng": self._gen.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state; block size, batch size and data length must be the ones it was saved with."""
        problems = []
        for key, own in (("block_size", self.block_size), ("batch_size", self.batch_size),
                         ("n_tokens", int(self.ids.shape[0]))):
            if key not in state:
                problems.append(f"missing {key!r}")
            elif state[key] != own:
                problems.append(f"{key} is {state[key]} in the state, {own} here")
        if "rng" not in state:
            problems.append("missing 'rng'")
        if problems:
            raise ValueError("BatchSampler.load_state_dict: the state does not fit this sampler; "
                             + "; ".join(problems))
        try:
            self._gen.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"BatchSampler.load_state_dict: invalid generator state ({exc})") from exc
        self.seed = int(state.get("seed", self.seed))
        self.batches_drawn = int(state.get("batches_drawn", 0))

    def __repr__(self) -> str:
        return (f"BatchSampler(n_tokens={self.ids.shape[0]}, block_size={self.block_size}, "
                f"batch_size={self.batch_size}, seed={self.seed})")
