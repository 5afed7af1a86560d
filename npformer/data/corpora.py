"""Corpora npformer can build on any machine without a download.

``stdlib_corpus``: Python source text, read from the Python standard library that every Python install carries.
Files are taken in a fixed order and only if they are pure ASCII, so the character vocabulary stays small.
"""

from __future__ import annotations

import os
import sysconfig

# Long-lived, plain-Python modules present in every CPython >= 3.10, in the order they are read.
STDLIB_FILES = (
    "argparse.py", "dataclasses.py", "functools.py", "textwrap.py", "string.py", "heapq.py", "bisect.py",
    "fractions.py", "statistics.py", "random.py", "shlex.py", "csv.py", "configparser.py", "difflib.py",
    "calendar.py", "colorsys.py", "copy.py", "contextlib.py", "enum.py", "fnmatch.py", "glob.py", "gettext.py",
    "gzip.py", "inspect.py", "ipaddress.py", "locale.py", "operator.py", "optparse.py", "pprint.py", "queue.py",
    "sched.py", "selectors.py", "shutil.py", "socket.py", "tempfile.py", "threading.py", "tokenize.py",
    "traceback.py", "typing.py", "uuid.py", "warnings.py", "weakref.py", "zipfile.py", "json/decoder.py",
    "json/encoder.py", "logging/__init__.py", "collections/__init__.py", "email/message.py",
    "http/client.py", "urllib/parse.py",
)


def stdlib_corpus(max_chars: int = 1_500_000) -> str:
    """Up to ``max_chars`` characters of Python source from this interpreter's standard library."""
    root = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for name in STDLIB_FILES:
        path = os.path.join(root, name)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if not text.isascii():
            continue
        text = text.replace("\t", "    ")
        parts.append(f"# ---- {name} ----\n{text}\n")
        total += len(parts[-1])
        if total >= max_chars:
            break
    if not parts:
        raise RuntimeError(f"no standard-library source files found under {root}")
    return "".join(parts)[:max_chars]
