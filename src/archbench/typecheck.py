"""Check a value parsed from JSON against a type annotation.

The types are the ones the run record's schema (:mod:`archbench.records`) is
written in: ``TypedDict`` classes (``NotRequired`` keys may be absent, extra
keys are kept and not checked), ``list[X]``, ``dict[str, X]``, ``X | None``,
``Literal[...]``, ``str``, ``bool``, ``int`` (not a bool; fits in 64 bits:
what a C library is handed) and ``float`` (any finite number, not a bool).
The first value that does not match is reported by its path in the record
(``models.mlp.units[3].seed``) and what was expected there.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, NotRequired, Required, Union

INT_LIMIT = 1 << 63  # ints must fit in a signed 64-bit integer (torch, numpy and the C libraries take them)


class Missing:
    """Where a required key is absent."""


MISSING = Missing()


class Mismatch(Exception):
    """The first value that does not match: where, what was expected, what was found."""

    def __init__(self, path: str, expected: str, found: Any) -> None:
        super().__init__(f"{path or 'the top level'}: expected {expected}, found {describe(found)}")
        self.path, self.expected, self.found = path, expected, found


def describe(value: Any) -> str:
    """A short description of a JSON value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, Missing):
        return "nothing (the key is missing)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        text = repr(value)
        return f"the number {text if len(text) <= 40 else text[:20] + '…'}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    return type(value).__name__


def child(path: str, key: str | int) -> str:
    """``path`` extended by a key (``a.b``, ``a["odd key"]``) or an index (``a[3]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def name_of(tp: Any) -> str:
    """What ``tp`` asks for, in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(name_of(a) for a in args)
    if origin is list:
        return f"a list of {name_of(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or tp is dict:
        return "an object"
    if _is_typed_dict(tp):
        return f"an object ({tp.__name__})"
    return str(tp)


def _is_typed_dict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


@cache
def fields(td: type) -> tuple[tuple[str, Any, bool], ...]:
    """(key, type, required) of a TypedDict, read from its annotations
    (``__required_keys__`` is unreliable under ``from __future__ import annotations``)."""
    out = []
    for key, tp in typing.get_type_hints(td, include_extras=True).items():
        origin = typing.get_origin(tp)
        if origin is NotRequired:
            out.append((key, typing.get_args(tp)[0], False))
        elif origin is Required:
            out.append((key, typing.get_args(tp)[0], True))
        else:
            out.append((key, tp, bool(getattr(td, "__total__", True))))
    return tuple(out)


Refine = Mapping[tuple[type, str], Any]


def _fields_of(td: type, refine: Refine) -> list[tuple[str, Any, bool]]:
    """A TypedDict's fields, with ``refine[(td, key)]`` in place of a key's
    declared type (``NotRequired[X]`` adds or makes optional)."""
    out = {key: (tp, required) for key, tp, required in fields(td)}
    for (cls, key), tp in refine.items():
        if cls is td:
            if typing.get_origin(tp) is NotRequired:
                out[key] = (typing.get_args(tp)[0], False)
            else:
                out[key] = (tp, out.get(key, (None, True))[1])
    return [(key, tp, required) for key, (tp, required) in out.items()]


def check(value: Any, tp: Any, path: str = "", refine: Refine | None = None) -> None:
    """Raise :class:`Mismatch` at the first part of ``value`` that is not
    ``tp``; ``refine`` names stricter types for some TypedDict keys
    ({(TypedDict, key): type}) than their static declarations."""
    refine = refine or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return
    if origin in (Union, types.UnionType):
        for alt in args:
            try:
                check(value, alt, path, refine)
                return
            except Mismatch as exc:
                if _matches_shape(value, alt):  # the right kind of value, wrong inside: say where
                    raise exc from None
        raise Mismatch(path, name_of(tp), value)
    if _is_typed_dict(tp):
        _check_typed_dict(value, tp, path, refine)
    elif origin is list or tp is list:
        if not isinstance(value, list):
            raise Mismatch(path, name_of(tp), value)
        for i, item in enumerate(value):
            check(item, args[0] if args else Any, child(path, i), refine)
    elif origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise Mismatch(path, name_of(tp), value)
        for key, item in value.items():
            check(item, args[1] if args else Any, child(path, key), refine)
    elif not _scalar_ok(value, tp, origin, args):
        raise Mismatch(path, name_of(tp), value)


def _check_typed_dict(value: Any, tp: type, path: str, refine: Refine) -> None:
    if not isinstance(value, dict):
        raise Mismatch(path, name_of(tp), value)
    for key, field_tp, required in _fields_of(tp, refine):
        if key in value:
            check(value[key], field_tp, child(path, key), refine)
        elif required:
            raise Mismatch(child(path, key), name_of(field_tp), MISSING)


def _scalar_ok(value: Any, tp: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool) and -INT_LIMIT <= value < INT_LIMIT
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    raise TypeError(f"archbench.typecheck cannot check {tp!r}")


def _matches_shape(value: Any, tp: Any) -> bool:
    """Whether ``value`` is the outer kind ``tp`` asks for (a list for a list,
    an object for an object): a mismatch inside it is reported, not the union."""
    origin = typing.get_origin(tp)
    if _is_typed_dict(tp) or origin is dict or tp is dict:
        return isinstance(value, dict)
    if origin is list or tp is list:
        return isinstance(value, list)
    return False
