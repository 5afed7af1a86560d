"""GPT-2's byte-level BPE tokenizer in pure Python and NumPy, read from Hugging Face's files.

    tok = BPETokenizer.from_pretrained("path/to/gpt2")    # vocab.json + merges.txt, or tokenizer.json
    ids = tok.encode("Hello world<|endoftext|>")           # (N,) int64: [15496, 995, 50256] for GPT-2's files
    text = tok.decode(ids)                                 # decode(encode(s)) == s for every string

encode, as GPT-2's tokenizer does it:
1. Split out the added tokens (``<|endoftext|>`` and the like) wherever they appear, longest first.
2. Split the rest into words with the pre-tokenisation pattern (npformer.data.bpe_pattern: GPT-2's, or the
   ``Split`` pattern of a tokenizer.json).
3. Write each word's UTF-8 bytes as characters through GPT-2's byte-to-unicode table (printable bytes stand for
   themselves, the others for the characters from U+0100 up), so every byte is a token of the base vocabulary.
4. Merge the pair of adjacent symbols of lowest rank in merges.txt, again and again, until no pair has a rank; the
   symbols left are vocabulary entries. A word's ids are cached, so common words cost one dict lookup.

decode joins the tokens' bytes and reads them as UTF-8 (an id sequence that cuts a character in two decodes it as
U+FFFD, as GPT-2's does).
"""

from __future__ import annotations

import functools
import json
import os
import re

import numpy as np

from .bpe_pattern import GPT2_PATTERN, compile_pattern
from .ids import host_ids

CACHE_LIMIT = 200_000  # words whose ids are remembered; the cache starts over when full


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: byte -> a printable character (printable Latin-1 bytes stand for themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BPETokenizer:
    """Byte-level BPE. vocab: {token: id}; merges: [(a, b), ...] in rank order; added_tokens: [{"content", "id",
    "special"}] matched whole in the text; pattern: the pre-tokenisation regular expression (None: GPT-2's);
    ignore_merges: a word that is itself a vocabulary entry is taken whole (Llama 3's tokenizer.json sets it)."""

    kind = "bpe"

    def __init__(self, vocab: dict, merges, added_tokens=(), pattern: str | None = None,
                 ignore_merges: bool = False):
        if not isinstance(vocab, dict) or not vocab:
            raise ValueError("BPETokenizer: vocab must be a non-empty mapping of token -> id")
        self.vocab = {str(t): int(i) for t, i in vocab.items()}
        self.merges = [tuple(m) for m in merges]
        self.added_tokens = [dict(content=str(t["content"]), id=int(t["id"]), special=bool(t.get("special", True)))
                             for t in added_tokens]
        self.pattern, self.ignore_merges = pattern, bool(ignore_merges)
        self._check()
        self._ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._byte_char = bytes_to_unicode()
        self._latin1_to_chars = str.maketrans({chr(b): c for b, c in self._byte_char.items()})
        self._words = compile_pattern(pattern or GPT2_PATTERN)
        contents = sorted((t["content"] for t in self.added_tokens), key=len, reverse=True)
        self._added_ids = {t["content"]: t["id"] for t in self.added_tokens}
        self._added = re.compile("|".join(map(re.escape, contents))) if contents else None
        self._cache: dict[str, list[int]] = {}
        # decode: each id's bytes (an added token is its text; a vocabulary token its characters' bytes)
        char_byte = {c: b for b, c in self._byte_char.items()}
        self._id_bytes = [b""] * self.vocab_size
        for token, i in self.vocab.items():
            self._id_bytes[i] = bytes(char_byte[c] for c in token) if all(c in char_byte for c in token) \
                else token.encode("utf-8")
        for t in self.added_tokens:
            self._id_bytes[t["id"]] = t["content"].encode("utf-8")

    def _check(self) -> None:
        ids = list(self.vocab.values()) + [t["id"] for t in self.added_tokens]
        if min(ids) < 0:
            raise ValueError(f"BPETokenizer: negative token id {min(ids)}")
        for a_b in self.merges:
            if len(a_b) != 2 or not all(isinstance(s, str) and s for s in a_b):
                raise ValueError(f"BPETokenizer: a merge must be a pair of non-empty tokens, got {a_b!r}")
        missing = [c for c in bytes_to_unicode().values() if c not in self.vocab]
        if missing:
            raise ValueError(f"BPETokenizer: the vocabulary lacks {len(missing)} of the 256 byte tokens (e.g. "
                             f"{missing[0]!r}), so some text could not be encoded; is this a byte-level BPE?")
        for a, b in self.merges:
            if a + b not in self.vocab:
                raise ValueError(f"BPETokenizer: merging {a!r} and {b!r} makes {a + b!r}, which is not in the "
                                 "vocabulary")
        by_content = {}
        for t in self.added_tokens:
            if not t["content"]:
                raise ValueError("BPETokenizer: an added token is empty")
            if by_content.setdefault(t["content"], t["id"]) != t["id"]:
                raise ValueError(f"BPETokenizer: added token {t['content']!r} has two ids")

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """One more than the largest id (vocabulary and added tokens)."""
        return 1 + max(max(self.vocab.values()), max((t["id"] for t in self.added_tokens), default=-1))

    def token_id(self, token: str) -> int | None:
        """The id of an added token or vocabulary entry (None when there is none): ``token_id("<|endoftext|>")``."""
        return self._added_ids.get(token, self.vocab.get(token))

    # -- encoding ----------------------------------------------------------------------------------------------
    def _bpe(self, symbols: list[str]) -> list[str]:
        """Merge the lowest-ranked adjacent pair, every occurrence left to right, until no pair has a rank."""
        ranks = self._ranks
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _word_ids(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            chars = word.encode("utf-8").decode("latin-1").translate(self._latin1_to_chars)
            if self.ignore_merges and chars in self.vocab:
                ids = [self.vocab[chars]]
            else:
                ids = [self.vocab[s] for s in self._bpe(list(chars))]
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _encode_plain(self, text: str, out: list) -> None:
        word_ids = self._word_ids
        for word in self._words.findall(text):
            out.extend(word_ids(word))

    def encode(self, text: str) -> np.ndarray:
        """str -> (N,) int64 ids, as GPT-2's tokenizer encodes it (no BOS/EOS added)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: expected str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"BPETokenizer.encode: character U+{ord(text[exc.start]):04X} at position {exc.start} "
                             "cannot be encoded as UTF-8 (a lone surrogate)") from None
        out: list[int] = []
        start = 0
        if self._added is not None:
            for m in self._added.finditer(text):
                self._encode_plain(text[start:m.start()], out)
                out.append(self._added_ids[m.group(0)])
                start = m.end()
        self._encode_plain(text[start:], out)
        return np.array(out, dtype=np.int64)

    def decode(self, ids) -> str:
        """(N,) ids (list or array of either backend) -> str (bytes that are not UTF-8 become U+FFFD)."""
        ids = host_ids(ids, "BPETokenizer.decode", self.vocab_size)
        table = self._id_bytes
        return b"".join([table[i] for i in ids.tolist()]).decode("utf-8", errors="replace")

    # -- saving with a checkpoint ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able and self-contained (the vocabulary and merges themselves, not a path that may move)."""
        return {"kind": self.kind, "vocab": dict(self.vocab), "merges": [f"{a} {b}" for a, b in self.merges],
                "added_tokens": [dict(t) for t in self.added_tokens], "pattern": self.pattern,
                "ignore_merges": self.ignore_merges}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        if not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("vocab"), dict) \
                or not isinstance(d.get("merges"), list):
            raise ValueError("BPETokenizer.from_dict: expected {'kind': 'bpe', 'vocab': {...}, 'merges': [...], "
                             f"...}}, got keys {sorted(d) if isinstance(d, dict) else type(d).__name__}")
        added = d.get("added_tokens", [])
        if not isinstance(added, list) or not all(isinstance(t, dict) and "content" in t and "id" in t
                                                  for t in added):
            raise ValueError("BPETokenizer.from_dict: added_tokens must be a list of {'content', 'id'}")
        return cls(d["vocab"], [_merge_pair(m) for m in d["merges"]], added, d.get("pattern"),
                   bool(d.get("ignore_merges", False)))

    # -- Hugging Face files ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path) -> "BPETokenizer":
        """From a Hugging Face directory: tokenizer.json when present, else vocab.json + merges.txt (with the added
        tokens of tokenizer_config.json, or GPT-2's <|endoftext|>)."""
        from .bpe_files import read_tokenizer_files

        return cls(**read_tokenizer_files(path))

    def save_pretrained(self, path) -> list[str]:
        """Write vocab.json, merges.txt, tokenizer.json and tokenizer_config.json, which transformers'
        AutoTokenizer reads. Returns the files written."""
        from .bpe_files import write_tokenizer_files

        return write_tokenizer_files(self, os.fspath(path))

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"added={[t['content'] for t in self.added_tokens]})")


def _merge_pair(m) -> tuple[str, str]:
    """A merge as tokenizer files write it: "a b" (merges.txt, older tokenizer.json) or ["a", "b"]."""
    if isinstance(m, str):
        parts = m.split(" ")
        if len(parts) == 2:
            return parts[0], parts[1]
    elif isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(s, str) for s in m):
        return m[0], m[1]
    raise ValueError(f"BPETokenizer: a merge must be 'a b' or ['a', 'b'], got {json.dumps(m)[:60]}")
