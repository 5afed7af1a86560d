"""Reading a user's training text, with an error that names the problem for each way a file can be unusable.

    ids, tokenizer = read_corpus("my.txt", tokenizer="char")   # or "byte": any file at all, as its bytes
    text = read_text("my.txt")                                  # the same checks, for another tokenizer
    check_long_enough(len(ids), block_size, val_fraction=0.1, what="my.txt")
"""

from __future__ import annotations

import os

import numpy as np

from .tokenizers import ByteTokenizer, CharTokenizer

TOKENIZER_KINDS = ("char", "byte")


def read_corpus(path: str, tokenizer: str = "char"):
    """The file at ``path`` -> ((N,) int64 token ids, tokenizer).

    "char": the file must be UTF-8 text; the vocabulary is its distinct characters. "byte": any file, one token per
    byte (256 ids). FileNotFoundError for a missing file; ValueError for a directory, an empty file, or (char) bytes
    that are not UTF-8, naming the byte and its offset and suggesting the byte tokenizer.
    """
    if tokenizer not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; valid tokenizers are {', '.join(TOKENIZER_KINDS)}")
    if tokenizer == "byte":
        return np.frombuffer(_read_bytes(path), dtype=np.uint8).astype(np.int64), ByteTokenizer()
    text = read_text(path, byte_hint=True)
    tok = CharTokenizer.from_text(text)
    return tok.encode(text), tok


def _read_bytes(path: str) -> bytes:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory; give a text file")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"{path!r} is empty: there is nothing to train on")
    return data


def read_text(path: str, byte_hint: bool = False) -> str:
    """The UTF-8 text of the file at ``path``, with the errors of ``read_corpus`` (a missing file, a directory,
    an empty file, bytes that are not UTF-8 with their offset; ``byte_hint`` suggests --tokenizer byte)."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = "; to train on its bytes, use --tokenizer byte" if byte_hint else ""
        raise ValueError(f"{path!r} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                         f"({exc.reason}){hint}") from None


def min_corpus_length(block_size: int, val_fraction: float) -> int:
    """The fewest tokens whose train/validation split leaves each part one context window plus one token."""
    need = block_size + 1
    n = 2 * need
    while True:
        n_val = int(round(n * val_fraction))
        if n_val >= need and n - n_val >= need:
            return n
        n += 1


def check_long_enough(n_tokens: int, block_size: int, val_fraction: float, what: str, unit: str = "characters"):
    """ValueError saying how much text is needed when ``n_tokens`` cannot fill a context window in both splits."""
    need = min_corpus_length(block_size, val_fraction)
    if n_tokens < need:
        raise ValueError(f"{what} has {n_tokens:,} {unit}, too few for a context of {block_size}: training and the "
                         f"{val_fraction:.0%} validation split each need {block_size + 1}, so at least {need:,} "
                         f"{unit} in all (or a smaller --block-size)")
