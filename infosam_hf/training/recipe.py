"""One parser for recipes: a YAML file plus ``--key value`` overrides, into the argument dataclasses.

Every key of every dataclass can be set in the YAML or on the command line. Values are coerced to the
field's type (PyYAML reads ``2e-4`` as a string; it becomes a float). Unknown keys fail with their
name and the closest valid keys. Dict fields accept dotted overrides: ``--peft_config.r 16``. A recipe may start from others:
``extends: base.yaml`` (or a list, merged in order; paths relative to the recipe) and override their keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..choices import ChoiceError, check_choice, literal_choices

logger = logging.getLogger(__name__)

__all__ = ["RecipeError", "load_recipe_file", "parse_recipe", "coerce_value", "recipe_values", "format_recipe_help", "recipe_help_schema",
           "check_known_keys", "wants_help"]


class RecipeError(ValueError):
    """A recipe or command-line problem, reported in one line naming the key or file."""


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _coerce_one(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation) or annotation
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        raise TypeError
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError
    if origin is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        number = float(value)
        if not number.is_integer():
            raise TypeError
        return int(number)
    if origin is float:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    if origin is str:
        if isinstance(value, (dict, list)):
            raise TypeError
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted `no` / `yes` as a boolean
            return "yes" if value else "no"
        return str(value)
    if origin in (list, tuple, Sequence):
        inner = (typing.get_args(annotation) or (Any,))[0]
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            value = parsed
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce_value(key, item, inner) for item in value]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return origin(value).value if not isinstance(value, origin) else value
    if isinstance(value, origin):
        return value
    raise TypeError


def _as_choice(value: Any, choices: tuple[Any, ...], optional: bool) -> Any:
    """A recipe value read for a ``Literal`` key: YAML 1.1's booleans back to the word written (``on`` / ``off``),
    ``none`` for an optional key that has no such choice."""
    if isinstance(value, bool):
        words = ("on", "yes", "true") if value else ("off", "no", "false")
        return next((word for word in words if word in choices), words[0])
    if optional and isinstance(value, str) and value.lower() in ("none", "null", "") and value not in choices:
        return None
    return value


def coerce_value(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to the dataclass field type ``annotation`` or raise :class:`RecipeError`."""
    candidates = _union_args(annotation)
    if type(None) in candidates and (value is None or (isinstance(value, str) and value in ("null", "~"))):
        return None
    choices = literal_choices(annotation)
    if choices is not None:  # a mode key: one of its Literal values
        value = _as_choice(value, choices, optional=type(None) in candidates)
        if value is None:
            return None
        try:
            return check_choice(key, value, choices)
        except ChoiceError as err:
            raise RecipeError(str(err)) from None
    # Prefer an exact type match (so "auto" stays a string where str | float is allowed).
    ordered = sorted(candidates, key=lambda t: 0 if (isinstance(t, type) and type(value) is t) else 1)
    for candidate in ordered:
        try:
            return _coerce_one(key, value, candidate)
        except (TypeError, ValueError):
            continue
    names = " | ".join(getattr(c, "__name__", str(c)) for c in candidates)
    raise RecipeError(f"{key}: expected {names}, got {value!r}")


def _parse_cli(args: Sequence[str], bool_keys: set[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise RecipeError(f"unexpected argument {token!r}: use --key value")
        key, eq, value = token[2:].partition("=")
        base, dot, sub = key.partition(".")
        key = base.replace("-", "_") + dot + sub  # --eval-prompt is --eval_prompt
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            elif key in bool_keys:
                value = "true"
            else:
                raise RecipeError(f"--{key}: missing value")
        # Values stay strings and are coerced by the field's type (so "no" stays "no" for a strategy);
        # entries of mapping options (--peft_config.r 16) have no declared type and are read as YAML.
        overrides[key] = _yaml_scalar(value) if "." in key else value
        i += 1
    return overrides


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a folder, not a recipe file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{path}{where}: invalid YAML ({problem})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of key: value")
    return dict(loaded or {})


EXTENDS_KEY = "extends"


def load_recipe_file(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file's keys with its ``extends:`` parents resolved (parents first, in order; the file's own
    keys win). Parent paths are relative to the file; a cycle fails in one line naming the chain."""
    resolved = path.resolve()
    if resolved in _chain:
        chain = " -> ".join(str(p) for p in (*_chain, resolved))
        raise RecipeError(f"{path}: extends cycle ({chain})")
    values = _load_yaml(path)
    parents = values.pop(EXTENDS_KEY, None)
    if parents is None:
        return values
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not parents or not all(isinstance(p, str) and p for p in parents):
        raise RecipeError(f"{path}: extends must be a recipe path or a list of them, got {parents!r}")
    merged: dict[str, Any] = {}
    for parent in parents:
        parent_path = path.parent / parent
        if not parent_path.is_file():
            raise RecipeError(f"{path}: extends {parent!r}: {parent_path} is not a recipe file")
        merged.update(load_recipe_file(parent_path, (*_chain, resolved)))
    merged.update(values)
    return merged


def _field_types(dataclass_types: Sequence[type]) -> dict[str, tuple[int, Any]]:
    fields: dict[str, tuple[int, Any]] = {}
    for index, cls in enumerate(dataclass_types):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                fields.setdefault(field.name, (index, hints[field.name]))
    return fields


def recipe_values(argv: Sequence[str], dataclass_types: Sequence[type],
                  defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw ``key: value`` mapping of ``[RECIPE.yaml] [--key value ...]`` over ``defaults`` (not coerced)."""
    argv = list(argv)
    recipe: dict[str, Any] = dict(defaults or {})
    if argv and not argv[0].startswith("--"):
        recipe.update(load_recipe_file(Path(argv.pop(0))))
    fields = _field_types(dataclass_types)
    bool_keys = {name for name, (_, ann) in fields.items() if bool in _union_args(ann)}
    merged = dict(recipe)
    overrides = _parse_cli(argv, bool_keys)
    # a key whose metadata names ``resets``: overriding it on the command line drops the recipe's value of that
    # other key (e.g. --peft_method drops peft_config, whose options were written for the recipe's method)
    resets = {f.name: f.metadata["resets"] for cls in dataclass_types for f in dataclasses.fields(cls)
              if "resets" in f.metadata}
    for key, reset in resets.items():
        changed = key in overrides and (key not in recipe or str(overrides[key]) != str(recipe[key]))
        if changed and reset in recipe and reset not in overrides and reset in merged:
            del merged[reset]
            logger.warning("--%s %s replaces the recipe's %s; the recipe's %s is not used", key, overrides[key],
                           recipe.get(key, "default"), reset)
    for key, value in overrides.items():
        base, dot, sub = key.partition(".")
        if dot:
            if base not in fields or dict not in [typing.get_origin(a) or a for a in _union_args(fields[base][1])]:
                raise RecipeError(f"--{key}: {base!r} is not a mapping option")
            current = dict(merged.get(base) or {})
            current[sub] = value
            merged[base] = current
        else:
            merged[key] = value
    for key in merged:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RecipeError(f"unknown key {key!r}{hint}")
    return merged


def parse_recipe(argv: Sequence[str], dataclass_types: Sequence[type],
                 defaults: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """Parse ``[RECIPE.yaml] [--key value ...]`` into instances of ``dataclass_types`` (in order).

    ``defaults`` (e.g. a run's recorded keys) sit under the recipe: the recipe and the command line win.
    """
    fields = _field_types(dataclass_types)
    per_class: list[dict[str, Any]] = [{} for _ in dataclass_types]
    for key, value in recipe_values(argv, dataclass_types, defaults).items():
        index, annotation = fields[key]
        per_class[index][key] = coerce_value(key, value, annotation)

    instances = []
    for cls, kwargs in zip(dataclass_types, per_class):
        try:
            instances.append(cls(**kwargs))
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{cls.__name__}: {str(err).splitlines()[0]}") from None
    return tuple(instances)


# ------------------------------------------------------------------------------------------ help
HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    """``-h`` / ``--help`` anywhere in ``argv`` (a recipe path may come first)."""
    return any(token in HELP_FLAGS for token in argv)


def _type_name(annotation: Any) -> str:
    names = []
    for candidate in _union_args(annotation):
        if candidate is type(None):
            continue
        origin = typing.get_origin(candidate)
        if origin is typing.Literal:
            names.append("{" + ",".join(str(value) for value in typing.get_args(candidate)) + "}")
        elif origin is not None:
            inner = ", ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(candidate))
            names.append(f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else origin.__name__)
        elif isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            names.append("{" + ",".join(str(m.value) for m in candidate) + "}")
        else:
            names.append(getattr(candidate, "__name__", str(candidate)))
    optional = type(None) in _union_args(annotation)
    return " | ".join(names) + (" | None" if optional else "")


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return "required"
    return str(value.value if isinstance(value, enum.Enum) else value)


def recipe_help_schema(dataclass_types: Sequence[type]) -> list[dict[str, Any]]:
    """Every key of ``dataclass_types`` grouped by dataclass: ``{"group", "doc", "keys": [{"name", "type",
    "default", "help", "bool"}]}`` (what ``--help`` prints; stored as JSON so help needs no torch)."""
    groups, seen = [], set()
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        keys = []
        for field in dataclasses.fields(cls):
            if not field.init or field.name in seen or field.name.startswith("_"):
                continue
            seen.add(field.name)
            keys.append({"name": field.name, "type": _type_name(hints[field.name]), "default": _default_text(field),
                         "help": " ".join(str(field.metadata.get("help", "")).split()),
                         "bool": bool in _union_args(hints[field.name])})
        groups.append({"group": cls.__name__, "doc": doc, "keys": keys})
    return groups


def format_recipe_help(schema: Sequence[dict[str, Any]], usage: str, values: dict[str, Any] | None = None,
                       width: int = 100) -> str:
    """The keys of ``schema`` (see :func:`recipe_help_schema`) by group, with type, default and help text.

    With ``values`` (the keys a recipe and the command line set), those keys show their value too.
    """
    values = values or {}
    lines = [usage, ""]
    for group in schema:
        lines.append(f"{group['group']}:" + (f" {group['doc']}" if group["doc"] else ""))
        for key in group["keys"]:
            lines.append(f"  --{key['name']} {key['type']}")
            note = f"(default: {key['default']}"
            if key["name"] in values:
                note += f"; set to: {values[key['name']]}"
            text = f"{key['help']} {note})" if key["help"] else f"{note})"
            lines += textwrap.wrap(text, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def check_known_keys(argv: Sequence[str], schema: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The raw values of ``[RECIPE.yaml] [--key value ...]``; an unknown key fails with the closest valid names.
    Needs only the help schema, so a mistyped key is reported in a second, before any model code is imported."""
    names = {key["name"] for group in schema for key in group["keys"]}
    bool_keys = {key["name"] for group in schema for key in group["keys"] if key["bool"]}
    argv = list(argv)
    merged = load_recipe_file(Path(argv.pop(0))) if argv and not argv[0].startswith("--") else {}
    merged.update(_parse_cli(argv, bool_keys))
    for key in merged:
        base = key.partition(".")[0]
        if base not in names:
            close = difflib.get_close_matches(base, sorted(names), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RecipeError(f"unknown key {base!r}{hint}")
    return merged
