"""The declarative TOML reader: a config dataclass drives types, choices, bounds, required keys
and files; every mistake is one line naming its key, and a bad value falls back to its default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from localio.tomlcheck import POSITIVE, Bound, MustExist, Paths, Required, TableReader, read


@dataclass(frozen=True)
class Example:
    name: Annotated[str, Required("what the thing is called")]
    mode: Literal["fast", "safe"] = "safe"
    workers: Annotated[int, POSITIVE] = 2
    ratio: float = 0.5
    port: Annotated[int, Bound(1, 65535, message="{value} is not a TCP port (1-65535)")] = 80
    enabled: bool = True
    tags: tuple[str, ...] = ()
    model: Annotated[Path | None, MustExist()] = None
    limit: Annotated[float | None, POSITIVE] = None


def run(table: dict[str, object], tmp_path: Path, **kwargs: object) -> tuple[dict, list[str]]:
    r = TableReader("x.toml")
    values = read(r, Example, table, "ex.", Paths(tmp_path), **kwargs)  # type: ignore[arg-type]
    return values, r.problems


def test_a_good_table_reads_into_typed_values(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"m")
    values, problems = run(
        {
            "name": "cam",
            "mode": "fast",
            "workers": 4,
            "ratio": 1,
            "port": 1883,
            "enabled": False,
            "tags": ["a", "b"],
            "model": "m.tflite",
            "limit": 2,
        },
        tmp_path,
    )
    assert problems == []
    assert Example(**values) == Example(
        "cam", "fast", 4, 1.0, 1883, False, ("a", "b"), tmp_path / "m.tflite", 2.0
    )
    assert isinstance(values["ratio"], float)


def test_every_mistake_is_one_line_and_falls_back_to_the_default(tmp_path):
    values, problems = run(
        {
            "mode": "turbo",
            "workers": 0,
            "ratio": "half",
            "port": 70000,
            "enabled": 1,
            "tags": "a",
            "model": "nope.tflite",
            "limit": -1,
            "colour": "red",
        },
        tmp_path,
    )
    assert problems == [
        "x.toml: ex.colour: unknown key",
        "x.toml: ex.name: missing (what the thing is called)",
        "x.toml: ex.mode: 'turbo' is not one of fast, safe",
        "x.toml: ex.workers: must be positive, got 0",
        "x.toml: ex.ratio: expected an integer or a number, got str",
        "x.toml: ex.port: 70000 is not a TCP port (1-65535)",
        "x.toml: ex.enabled: expected true or false, got int",
        "x.toml: ex.tags: expected a list, got str",
        f"x.toml: ex.model: {tmp_path / 'nope.tflite'} does not exist",
        "x.toml: ex.limit: must be positive, got -1.0",
    ]
    assert (values["mode"], values["workers"], values["port"], values["limit"]) == (
        "safe",
        2,
        80,
        None,
    )


def test_a_boolean_is_not_a_number_and_defaults_can_come_from_elsewhere(tmp_path):
    values, problems = run({"name": "cam", "workers": True}, tmp_path, defaults={"ratio": 0.9})
    assert problems == ["x.toml: ex.workers: expected an integer, got a boolean"]
    assert values["ratio"] == 0.9


def test_skipped_fields_are_left_to_the_caller_and_files_may_go_unchecked(tmp_path):
    values, problems = run(
        {"name": "cam", "model": "later.tflite", "tags": 3}, tmp_path, skip={"tags"}
    )
    assert "tags" not in values
    assert problems == [f"x.toml: ex.model: {tmp_path / 'later.tflite'} does not exist"]
    r = TableReader("x.toml")
    values = read(
        r,
        Example,
        {"name": "cam", "model": "later.tflite"},
        "ex.",
        Paths(tmp_path, check_files=False),
    )
    assert r.problems == [] and values["model"] == tmp_path / "later.tflite"
