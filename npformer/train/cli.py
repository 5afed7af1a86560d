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
