"""Mode keys typed ``Literal[...]`` and the one check of their values.

A dataclass field annotated ``Literal["a", "b"]`` (or ``Literal[...] | None``) takes exactly those values: the
recipe parser checks them as it reads a recipe, and the argument dataclasses call :func:`check_choices` when
built in Python, so a bad value is one line naming the key, the value, the choices and the closest one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Literal

__all__ = ["ChoiceError", "literal_choices", "check_choice", "check_choices"]


class ChoiceError(ValueError):
    """A mode key set to a value that is not one of its choices."""


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` or ``Literal[...] | None`` annotation; None for any other annotation
    (a Literal beside another type, e.g. ``str | Literal[False]``, is not a closed set of choices)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return literal_choices(others[0]) if len(others) == 1 else None
    return typing.get_args(annotation) if origin is Literal else None


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` when it is one of ``choices``, else :class:`ChoiceError`:
    ``key='valu' is not one of [a, b, value]; did you mean 'value'?``."""
    if value in choices:
        return value
    by_lower = {str(choice).lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1, cutoff=0.6)
    hint = f"; did you mean {by_lower[close[0]]!r}?" if close else ""
    raise ChoiceError(f"{key}={value!r} is not one of [{', '.join(str(c) for c in choices)}]{hint}")


@functools.cache
def _choice_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    hints = typing.get_type_hints(cls)
    fields = []
    for field in dataclasses.fields(cls):
        choices = literal_choices(hints.get(field.name))
        if choices is not None:
            fields.append((field.name, choices, type(None) in typing.get_args(hints[field.name])))
    return tuple(fields)


def check_choices(instance: Any) -> None:
    """Every ``Literal`` field of the dataclass ``instance`` holds one of its choices (None where optional)."""
    for key, choices, optional in _choice_fields(type(instance)):
        value = getattr(instance, key)
        if not (optional and value is None):
            check_choice(key, value, choices)
