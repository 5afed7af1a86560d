"""Building a config dataclass from a dict read from a file (a checkpoint's meta), checking every field first.

A checkpoint is data from outside the program: its ``config`` entry may be a number, a list, or a dict with a
misspelled key or a string where a number belongs. ``checked_fields`` says which, naming the field, before any
dataclass is built, so the error never comes from deep inside ``__init__`` ("'int' object is not iterable").
"""

from __future__ import annotations

import dataclasses
import types
import typing


def _allowed(hint) -> tuple:
    """The Python types a field's annotation accepts, as a tuple for isinstance (None as type(None))."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _allowed(arg))
    if hint is float:
        return (float, int)  # JSON writes 1.0 as 1 sometimes; an int is a fine float
    if hint is type(None) or hint is None:
        return (type(None),)
    return (origin or hint,)


def _type_name(types_: tuple) -> str:
    names = sorted({"null" if t is type(None) else t.__name__ for t in types_})
    return " or ".join(names)


def checked_fields(cls, data, where: str, optional=()) -> dict:
    """``data`` checked against dataclass ``cls``: a mapping, no unknown key, no missing key (except the names in
    ``optional``: fields added to the format later, which take their defaults), every value of the field's type
    (``bool`` is not an ``int``). Returns a plain dict for ``cls(**...)``; raises ValueError naming ``where`` and
    the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must be a mapping of {cls.__name__} fields, got {type(data).__name__} "
                         f"{data!r:.60}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; {cls.__name__} has "
                         f"{', '.join(sorted(fields))}")
    missing = sorted(fields - set(data) - set(optional))
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
    for name, value in data.items():
        allowed = _allowed(hints[name])
        if isinstance(value, bool) and bool not in allowed:
            ok = False
        else:
            ok = isinstance(value, allowed)
        if not ok:
            raise ValueError(f"{where}: field {name!r} must be {_type_name(allowed)}, got "
                             f"{type(value).__name__} {value!r:.40}")
    return dict(data)
