"""Pre-tokenisation patterns of byte-level BPE tokenizers, compiled for Python's ``re``.

GPT-2 splits text into words with a regular expression written for engines that know Unicode properties:

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

Python's ``re`` has no ``\\p{...}``, and its ``\\s`` is not theirs (it also matches U+001C..U+001F, which Unicode
does not call white space). ``translate`` rewrites such a pattern with explicit character classes built from
``unicodedata``: ``\\p{L}`` (letters: Lu Ll Lt Lm Lo), ``\\p{N}`` (numbers: Nd Nl No) and ``\\s`` (the White_Space
property, as Oniguruma, the engine Hugging Face's tokenizers use, defines it). The classes follow the Unicode
version of this Python (``unicodedata.unidata_version``); code points assigned in a later version may split
differently there.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Unicode's White_Space property (Oniguruma's \s): tab..carriage return, space, NEL, NBSP, and the separators
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]


def _escape(cp: int) -> str:
    return f"\\U{cp:08x}" if cp > 0xFFFF else f"\\u{cp:04x}"


def _class_body(ranges) -> str:
    """The inside of a character class matching the code point ranges [(first, last), ...]."""
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)


@functools.lru_cache(maxsize=None)
def _category_ranges(major: str) -> str:
    """Class body for every code point whose general category starts with ``major`` ("L", "N")."""
    cats = (unicodedata.category(chr(cp))[0] == major for cp in range(0x110000))
    ranges, cp = [], 0
    for is_major, run in itertools.groupby(cats):
        n = sum(1 for _ in run)
        if is_major:
            ranges.append((cp, cp + n - 1))
        cp += n
    return _class_body(ranges)


def _body(name: str) -> str:
    if name == "s":
        return _class_body(WHITE_SPACE)
    return _category_ranges(name)


_TOKEN = re.compile(r"\\p\{(\w+)\}|\\P\{(\w+)\}|\\([sSdDwW])|\\.|\[\^?|\]|.", re.DOTALL)


def translate(pattern: str) -> str:
    """A pattern using \\p{L}, \\p{N}, \\s and \\S (inside and outside character classes) rewritten for ``re``.
    ValueError for what it cannot rewrite faithfully: other Unicode properties, \\P{...}, \\S inside a class,
    and \\d \\w (whose meanings differ between the engines)."""
    out, in_class = [], False
    for m in _TOKEN.finditer(pattern):
        prop, neg_prop, short, text = m.group(1), m.group(2), m.group(3), m.group(0)
        if neg_prop is not None or (prop is not None and prop not in ("L", "N")):
            raise ValueError(f"BPE pre-tokenizer pattern: {text} is not supported (only \\p{{L}}, \\p{{N}}, \\s, \\S)")
        if prop is not None or short == "s":
            body = _body(prop or "s")
            out.append(body if in_class else f"[{body}]")
        elif short == "S":
            if in_class:
                raise ValueError("BPE pre-tokenizer pattern: \\S inside a character class is not supported")
            out.append(f"[^{_body('s')}]")
        elif short is not None:
            raise ValueError(f"BPE pre-tokenizer pattern: \\{short} is not supported (its meaning differs between "
                             "regular-expression engines)")
        elif text.startswith("[") and not in_class:
            in_class = True
            out.append(text)
        elif text == "]" and in_class:
            in_class = False
            out.append(text)
        else:
            out.append(text)
    return "".join(out)


@functools.lru_cache(maxsize=8)
def compile_pattern(pattern: str = GPT2_PATTERN) -> re.Pattern:
    """``translate(pattern)`` compiled (cached: building the classes takes a fraction of a second)."""
    try:
        return re.compile(translate(pattern))
    except re.error as exc:
        raise ValueError(f"BPE pre-tokenizer pattern {pattern!r} does not compile: {exc}") from None
