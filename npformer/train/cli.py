"""Command-line flags built from config dataclasses (nanoGPT's configurator, done with argparse).

Every field of a dataclass becomes ``--field-name VALUE`` (booleans: ``--field`` / ``--no-field``); argparse
refuses unknown flags and lists the valid ones in ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _field_type(cls, f: dataclasses.Field):
    hint = typing.get_type_hints(cls).get(f.name, str)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_dataclass_args(parser: argparse.ArgumentParser, cls, defaults=None, skip=(), title=None) -> None:
    """Add one flag per field of dataclass ``cls``; ``defaults`` (an instance or dict) overrides the defaults."""
    group = parser.add_argument_group(title or cls.__name__)
    base = dataclasses.asdict(defaults) if dataclasses.is_dataclass(defaults) else dict(defaults or {})
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name == "extra":
            continue
        default = base.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        typ = _field_type(cls, f)
        if typ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        else:
            group.add_argument(flag, dest=f.name, type=typ, default=default, metavar=typ.__name__.upper(),
                               help=f"(default: {default})")


def dataclass_from_args(cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(extra)
    return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# one clean entry for every script: a user's mistake is one line and exit code 2, never a traceback
# ---------------------------------------------------------------------------------------------------------------
USAGE_ERROR = 2  # the exit code of a mistake in what the user asked for (argparse uses it too)
INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C


def expected_errors() -> tuple[type, ...]:
    """What a user's mistake raises: bad values, bad types, missing or unreadable files, undecodable text,
    npformer's own errors (a backend that cannot be used, a checkpoint that will not load, a diverged run)."""
    from ..backend import BackendError
    from .trainer import TrainingDiverged  # CheckpointError is a ValueError

    return (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
            BackendError, TrainingDiverged)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")


def describe(exc: BaseException) -> str:
    """One line for an expected error: its message, without the exception's class name or errno."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename!r}: {exc.strerror.lower()}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message's own layout


def run_script(main, argv=None, hints: dict | None = None) -> int:
    """Run a script's ``main(argv)`` and return its exit code: 0 (or what main returns) on success; for an expected
    error one line ``error: ...`` on stderr (then, where ``hints`` maps the error's type to advice, a line saying
    what to do) and exit code 2. Unexpected errors keep their traceback, and ``--debug`` keeps it for every error.
    A Ctrl-C that main does not handle itself ends with one line and code 130."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        code = main(argv)
    except BrokenPipeError:  # the reader went away (``| head``): nothing of ours failed
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except expected_errors() as exc:
        if debug:
            raise
        print(f"error: {describe(exc)}", file=sys.stderr)
        for kind, hint in (hints or {}).items():
            if isinstance(exc, kind):
                print(hint, file=sys.stderr)
                break
        return USAGE_ERROR
    return 0 if code is None else int(code) if isinstance(code, int) else 0
