"""Typed reading of TOML tables that collects every problem, one line each.

`read(reader, SomeConfig, table, prefix, paths)` reads a table into the fields of a config
dataclass, driven by the dataclass itself (types, `Literal` choices, `Annotated` bounds);
`TableReader` holds the problems and the few hand-made checks a config adds.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = ["POSITIVE", "Bound", "MustExist", "Paths", "Problems", "Required", "TableReader", "read"]


class Problems(ValueError):
    """Input with mistakes; `problems` has one human line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TableReader:
    """Reads typed values from parsed TOML tables, collecting one line per problem."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def get(
        self,
        table: dict[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        default: Any,
        prefix: str = "",
    ) -> Any:
        name = f"{prefix}{key}"
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.problem(name, f"expected {_kind_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problem(name, f"expected {_kind_name(kind)}, got {type(value).__name__}")
            return default
        return value

    def unknown(self, table: dict[str, Any], known: set[str], prefix: str = "") -> None:
        for key in sorted(set(table) - known):
            self.problem(f"{prefix}{key}", "unknown key")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "list": "a list",
        "dict": "a table",
        "bool": "true or false",
    }
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


# The declarative reader ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """`Annotated` metadata: the range a number must be in, and the line that says it is not
    (`{value}` is the value read)."""

    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    message: str = ""

    def problem(self, value: float) -> str | None:
        low_fails = self.min is not None and (
            value <= self.min if self.exclusive_min else value < self.min
        )
        if low_fails or (self.max is not None and value > self.max):
            return (self.message or "must be positive, got {value}").format(value=value)
        return None


POSITIVE = Bound(min=0, exclusive_min=True)  # "must be positive, got 0"


@dataclass(frozen=True)
class MustExist:
    """`Annotated` metadata on a `Path`: the file must exist (when files are checked)."""


@dataclass(frozen=True)
class Required:
    """`Annotated` metadata: the line after "missing" when the key is absent."""

    hint: str = ""


@dataclass(frozen=True)
class Paths:
    """How `read` resolves paths: relative to `base`; `expand_user` for `~`; `check_files`
    off skips `MustExist` (the installer checks inside the image tree it builds)."""

    base: Path
    expand_user: bool = False
    check_files: bool = True

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser() if self.expand_user else Path(value)
        return p if p.is_absolute() else self.base / p


def read(
    r: TableReader,
    cls: type[Any],
    table: dict[str, Any],
    prefix: str,
    paths: Paths,
    *,
    skip: Collection[str] = (),
    extra_keys: Collection[str] = (),
    not_keys: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The values of `cls`'s fields read from `table`, one problem line per mistake.

    Driven by the dataclass: each field's type (`int`, `float`, `str`, `bool`, `Path`,
    `Literal[...]`, `tuple[str, ...]`, `X | None`), its default (or `defaults[name]`), and its
    `Annotated` metadata (`Bound`, `MustExist`, `Required`). A field without a default is
    required. Keys outside the fields (and `extra_keys`; `not_keys` are fields no file sets)
    are reported as unknown; fields in `skip` are left to the caller. A value with a problem
    is replaced by its default.
    """
    hints = get_type_hints(cls, include_extras=True)
    names = [f.name for f in fields(cls) if f.name not in skip and f.name not in not_keys]
    known = {f.name for f in fields(cls)} - set(not_keys) | set(extra_keys)
    r.unknown(table, known, prefix)
    given = dict(defaults or {})
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in names:
            continue
        hint, meta = _unwrap(hints[f.name])
        if f.name in given:
            default = given[f.name]
        elif f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = None
        name = f"{prefix}{f.name}"
        if f.name not in table:
            required = (
                f.name not in given and f.default is MISSING and (f.default_factory is MISSING)
            )
            if required:
                hint_text = next((m.hint for m in meta if isinstance(m, Required)), "")
                r.problem(name, f"missing ({hint_text})" if hint_text else "missing")
            values[f.name] = default
            continue
        values[f.name] = _value(r, hint, meta, table[f.name], name, default, paths)
    return values


def _unwrap(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    meta: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        hint, *rest = get_args(hint)
        meta = tuple(rest)
    if get_origin(hint) in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) == 1:
            inner, more = _unwrap(options[0])
            return inner, meta + more
    return hint, meta


def _value(
    r: TableReader,
    hint: Any,
    meta: tuple[Any, ...],
    value: Any,
    name: str,
    default: Any,
    paths: Paths,
) -> Any:
    if get_origin(hint) is Literal:
        options = tuple(str(o) for o in get_args(hint))
        if not isinstance(value, str):
            r.problem(name, f"expected a string, got {_type_name(value)}")
            return default
        if value not in options:
            r.problem(name, f"{value!r} is not one of {', '.join(options)}")
            return default
        return value
    if get_origin(hint) is tuple:
        if not isinstance(value, list):
            r.problem(name, f"expected a list, got {_type_name(value)}")
            return default
        return tuple(value)
    kind: type | tuple[type, ...] = (int, float) if hint is float else str if hint is Path else hint
    if not _is(value, kind):
        expected = _kind_name(kind)
        r.problem(
            name,
            f"expected {expected}, got "
            f"{'a boolean' if isinstance(value, bool) else _type_name(value)}",
        )
        return default
    if hint is float:
        value = float(value)
    for bound in (m for m in meta if isinstance(m, Bound)):
        problem = bound.problem(value)
        if problem is not None:
            r.problem(name, problem)
            return default
    if hint is Path:
        path = paths.resolve(value)
        if paths.check_files and any(isinstance(m, MustExist) for m in meta) and not path.exists():
            r.problem(name, f"{path} does not exist")
        return path
    return value


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _type_name(value: Any) -> str:
    return type(value).__name__
