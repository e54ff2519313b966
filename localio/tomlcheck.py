"""Typed reading of TOML tables that collects every problem, one line each."""

from __future__ import annotations

from typing import Any

__all__ = ["Problems", "TableReader"]


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

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
            prefix: str = "") -> Any:
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

    def positive(self, name: str, value: float, default: Any) -> Any:
        if value is not None and value <= 0:
            self.problem(name, f"must be positive, got {value}")
            return default
        return value

    def unknown(self, table: dict[str, Any], known: set[str], prefix: str = "") -> None:
        for key in sorted(set(table) - known):
            self.problem(f"{prefix}{key}", "unknown key")


    def table(self, doc: dict[str, Any], key: str, known: set[str]) -> dict[str, Any]:
        """A sub-table (empty when absent), with each key outside `known` reported."""
        value: dict[str, Any] = self.get(doc, key, dict, {})
        self.unknown(value, known, f"{key}.")
        return value

    def choice(self, table: dict[str, Any], key: str, options: tuple[str, ...], default: str,
               prefix: str = "") -> str:
        value: str = self.get(table, key, str, default, prefix)
        if value not in options:
            self.problem(f"{prefix}{key}", f"{value!r} is not one of {', '.join(options)}")
            return default
        return value

def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "float": "a number", "list": "a list",
             "dict": "a table", "bool": "true or false"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)
