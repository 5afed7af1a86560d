"""Tokenizers: text <-> token ids on the host.

    tok = CharTokenizer.from_text(text)            # or ByteTokenizer(), or BPETokenizer.from_pretrained(dir)
    ids = tok.encode(text)                         # (N,) int64, on the host
    text = tok.decode(ids)

Token ids live on the host (NumPy) until a batch is drawn (npformer.data.batches).
"""

from __future__ import annotations

import numpy as np

from .bpe import BPETokenizer
from .ids import host_ids as _host_ids


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


TOKENIZERS = {CharTokenizer.kind: CharTokenizer, ByteTokenizer.kind: ByteTokenizer, BPETokenizer.kind: BPETokenizer}


def tokenizer_from_dict(d: dict):
    """Rebuild a tokenizer from its ``to_dict()`` (dispatching on d["kind"])."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer_from_dict: unknown tokenizer kind {kind!r}; known kinds are {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].from_dict(d)
