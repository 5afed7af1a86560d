"""Writing a file so that a crash never leaves it half-written: nothing a user saved is lost.

The bytes go to a temporary file beside the target, are flushed and fsynced, and the temporary file is renamed
over the target (``os.replace``, atomic on POSIX and Windows), then the directory is fsynced so that the rename
itself survives a power cut. A crash leaves the old file or the new one; an error removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

SHARED = 0o644  # for files other programs read (a model directory, a CSV); the default is the owner's alone


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None,
                permissions: int | None = None):
    """``with atomic_open(path, "w", encoding="utf-8") as f: ...``: f is a temporary file that becomes ``path``
    when the block ends without an error. mode "wb" or "w"; permissions: None keeps the temporary file's (the
    owner's alone), SHARED makes it readable by everyone."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
