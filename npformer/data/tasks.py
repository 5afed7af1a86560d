"""Synthetic tasks generated in code (nothing to download), for the encoder examples and learning tests.

Everything is drawn on the host with a seeded NumPy generator and returned as NumPy int64 arrays; move batches to
the active backend with ``backend.asarray`` at the edge.

Sequence to sequence (``Seq2SeqTask``): a source string of symbols and the target the task asks for:
    "reverse"  3 1 4 1 5  ->  5 1 4 1 3
    "sort"     3 1 4 1 5  ->  1 1 3 4 5
    "copy"     3 1 4 1 5  ->  3 1 4 1 5
Token ids: 0 <pad>, 1 <bos>, 2 <eos>, then the symbols (shown as digits, then letters).

Classification (``BracketTask``): is a string of brackets balanced?  "[CLS] ( ( ) ) ( )" -> 1,
"[CLS] ( ) ) ( ( )" -> 0. Half the examples are balanced; most negatives have as many "(" as ")" (so counting is
not enough: some prefix closes more than it opened), the rest have unequal counts.
Token ids: 0 <pad>, 1 [CLS], 2 "(", 3 ")".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend

PAD, BOS, EOS = 0, 1, 2
SEQ2SEQ_KINDS = ("reverse", "sort", "copy")
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _host_list(ids) -> list:
    """Ids of any backend (a list, NumPy or CuPy array) as a Python list: the edge where results come home."""
    return backend.to_numpy(ids).tolist() if hasattr(ids, "dtype") else list(ids)


def pad_rows(rows, width: int | None = None, pad: int = PAD) -> np.ndarray:
    """A list of integer lists -> (N, width) int64, right-padded with pad (width: the longest row)."""
    width = max(len(r) for r in rows) if width is None else width
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@dataclass
class Seq2SeqTask:
    """A toy translation task over n_symbols symbols, source lengths uniform in [min_len, max_len]."""

    kind: str = "reverse"
    n_symbols: int = 10
    min_len: int = 1
    max_len: int = 10

    def __post_init__(self):
        if self.kind not in SEQ2SEQ_KINDS:
            raise ValueError(f"Seq2SeqTask: kind must be one of {SEQ2SEQ_KINDS}, got {self.kind!r}")
        if not 1 <= self.n_symbols <= len(SYMBOLS):
            raise ValueError(f"Seq2SeqTask: n_symbols must be in [1, {len(SYMBOLS)}], got {self.n_symbols}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"Seq2SeqTask: need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")

    @property
    def vocab_size(self) -> int:
        return 3 + self.n_symbols

    @property
    def target_len(self) -> int:
        """Longest target including eos (the decoder's max_len)."""
        return self.max_len + 1

    def translate(self, src: list[int]) -> list[int]:
        """The correct target (without bos/eos) of one source."""
        if self.kind == "reverse":
            return src[::-1]
        if self.kind == "sort":
            return sorted(src)
        return list(src)

    def sample(self, rng: np.random.Generator, n: int) -> list[tuple[list[int], list[int]]]:
        """n random (source, target) pairs of token ids (no bos/eos)."""
        lengths = rng.integers(self.min_len, self.max_len + 1, size=n)
        pairs = []
        for length in lengths:
            src = (rng.integers(0, self.n_symbols, size=int(length)) + 3).tolist()
            pairs.append((src, self.translate(src)))
        return pairs

    def batch(self, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pairs -> src (N, S), tgt_in (N, T) = [bos, y..], tgt_out (N, T) = [y.., eos], right-padded."""
        src = pad_rows([s for s, _ in pairs])
        tgt_in = pad_rows([[BOS] + t for _, t in pairs])
        tgt_out = pad_rows([t + [EOS] for _, t in pairs])
        return src, tgt_in, tgt_out

    def to_text(self, ids) -> str:
        """Token ids -> a string of symbols, stopping at eos (pads and bos skipped)."""
        out = []
        for i in _host_list(ids):
            if i == EOS:
                break
            if i >= 3:
                out.append(SYMBOLS[i - 3])
        return " ".join(out)


def exact_match(predicted, pairs) -> float:
    """Fraction of rows whose decoded tokens (up to and including eos) equal target + [eos] exactly.

    predicted: (N, L) integer array from greedy_decode / beam_search (host or device)."""
    pred = _host_list(predicted)
    hits = 0
    for row, (_, tgt) in zip(pred, pairs):
        want = tgt + [EOS]
        hits += row[:len(want)] == want
    return hits / max(len(pairs), 1)


# ---------------------------------------------------------------------------------------------------------------
# classification: balanced brackets
# ---------------------------------------------------------------------------------------------------------------
CLS, OPEN, CLOSE = 1, 2, 3


def is_balanced(brackets: list[int]) -> bool:
    depth = 0
    for b in brackets:
        depth += 1 if b == OPEN else -1
        if depth < 0:
            return False
    return depth == 0


@dataclass
class BracketTask:
    """Balanced-bracket strings of lengths in [min_len, max_len] (even for the balanced ones), [CLS] first."""

    min_len: int = 2
    max_len: int = 16
    equal_count_negatives: float = 0.75  # share of negatives with as many "(" as ")"

    def __post_init__(self):
        if not 2 <= self.min_len <= self.max_len:
            raise ValueError(f"BracketTask: need 2 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if self.max_len // 2 < (self.min_len + 1) // 2:
            raise ValueError(f"BracketTask: no even length in [{self.min_len}, {self.max_len}] for balanced strings")

    vocab_size = 4
    n_classes = 2

    def _shuffled_equal(self, rng, half: int) -> list[int]:
        s = [OPEN] * half + [CLOSE] * half
        rng.shuffle(s)
        return s

    def _one(self, rng, label: int) -> list[int]:
        halves = range((self.min_len + 1) // 2, self.max_len // 2 + 1)
        while True:
            if label == 1 or rng.random() < self.equal_count_negatives:
                s = self._shuffled_equal(rng, int(rng.choice(list(halves))))
            else:
                s = rng.choice([OPEN, CLOSE], size=int(rng.integers(self.min_len, self.max_len + 1))).tolist()
            if is_balanced(s) == bool(label):
                return s

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n examples: ids (n, 1 + max_len) with [CLS] first and right padding, labels (n,) in {0, 1}."""
        labels = rng.integers(0, 2, size=n)
        rows = [[CLS] + self._one(rng, int(y)) for y in labels]
        return pad_rows(rows, width=1 + self.max_len), labels.astype(np.int64)

    @staticmethod
    def to_text(ids) -> str:
        return "".join({OPEN: "(", CLOSE: ")"}.get(i, "") for i in _host_list(ids))
