"""Typed, validated settings: field metadata, checks and error messages shared by every config.

A setting is a dataclass field whose ``metadata`` (built with :func:`setting`) names its group, its help
text and its allowed range. :func:`validate_fields` checks every field of an object once, at
construction, and raises :class:`ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import sys
import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A setting has an unknown name, a wrong type or a value outside its allowed range."""


# The groups a setting belongs to, in the order --help and the configuration reference show them.
GROUPS = (
    ARCHITECTURE, SPIKING, ATTENTION, MEMORY, REGULARISATION, OPTIONAL_BLOCKS, GENERATION, TRAINING, DATA, EVALUATION,
    TASK,
) = ("architecture", "spiking", "attention", "memory", "regularisation", "optional blocks", "generation",
     "training", "data", "evaluation", "task")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    group: str,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field carrying its group (one of :data:`GROUPS`), help text and numeric bounds."""
    if group not in GROUPS:
        raise ValueError(f"setting group {group!r} is not one of {GROUPS}: add it to GROUPS in {__name__}")
    metadata = {"group": group, "help": help, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` declared with :func:`setting` (those with a group), in declaration order."""
    return [f for f in dataclasses.fields(cls) if "group" in f.metadata]


def by_group(fields: Iterable[dataclasses.Field]) -> list[dataclasses.Field]:
    """``fields`` in the order of their groups (:data:`GROUPS`), declaration order within a group."""
    return sorted(fields, key=lambda f: GROUPS.index(f.metadata["group"]))


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The evaluated annotations of the :func:`setting` fields of ``cls``.

    Annotations are strings under ``from __future__ import annotations``; each is evaluated in the module
    of the class that declared it (``typing.get_type_hints`` would also evaluate the base classes' hints,
    which may name modules imported only for type checking).
    """
    types_by_name = {}
    for f in settings_fields(cls):
        tp = f.type
        if isinstance(tp, str):
            owner = next(c for c in cls.__mro__ if f.name in c.__dict__.get("__annotations__", {}))
            tp = eval(tp, vars(sys.modules[owner.__module__]))  # noqa: S307 - our own annotations
        types_by_name[f.name] = tp
    return types_by_name


def closest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, for "did you mean" messages."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_error(owner: str, key: str, known: Iterable[str]) -> ConfigError:
    """The error for an unknown setting, suggesting the closest valid name."""
    hint = closest_name(key, known)
    suggestion = f"; did you mean '{hint}'?" if hint else ""
    return ConfigError(f"{owner}: unknown setting '{key}'{suggestion}")


def describe_type(tp: Any) -> str:
    """A short human description of a type annotation, for error messages and --help."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"a list of {describe_type(inner)}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, inner) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def check_value(owner: str, name: str, value: Any, tp: Any, meta: dict) -> Any:
    """Check one value against its type and bounds; return it normalised (ints to floats, tuples to lists)."""
    if not _matches(value, tp):
        raise ConfigError(f"{owner}.{name} = {value!r} is not allowed: expected {describe_type(tp)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, symbol, ok in (
            ("ge", ">=", lambda v, lim: v >= lim),
            ("gt", ">", lambda v, lim: v > lim),
            ("le", "<=", lambda v, lim: v <= lim),
            ("lt", "<", lambda v, lim: v < lim),
        ):
            limit = meta.get(key)
            if limit is not None and not ok(value, limit):
                raise ConfigError(f"{owner}.{name} = {value!r} is out of range: must be {symbol} {limit}")
        if tp is float or (get_origin(tp) in (Union, types.UnionType) and float in get_args(tp)):
            if isinstance(value, int):
                value = float(value)
    if isinstance(value, tuple):
        value = list(value)
    return value


def validate_fields(obj: Any, cls: type | None = None) -> None:
    """Check every :func:`setting` field of ``obj`` in place (types, choices, bounds)."""
    cls = cls or type(obj)
    hints = field_types(cls)
    owner = cls.__name__
    for f in settings_fields(cls):
        value = getattr(obj, f.name)
        object.__setattr__(obj, f.name, check_value(owner, f.name, value, hints[f.name], dict(f.metadata)))
