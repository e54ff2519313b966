"""The files an agent config names, as the hardened service will see them.

The unit runs with `ProtectHome=yes` (/home, /root and /run/user look empty) and
`PrivateTmp=yes` (its own empty /tmp and /var/tmp): a model or a password file there exists
when the config is checked by hand and is gone when the service starts. The installer refuses
such paths, insists on absolute ones (the installed config lives in /etc/litefleet), and with
`--root` looks for the files inside the image tree rather than on the building machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["PATH_KEYS", "configured_paths", "hidden_by_unit", "path_problems"]

# Config keys naming files, as (table, key).
PATH_KEYS = (
    ("model", "initial"),
    ("model", "labels"),
    ("mqtt", "tls_ca"),
    ("mqtt", "tls_cert"),
    ("mqtt", "tls_key"),
    ("mqtt", "password_file"),
)
# What the unit hides, and the setting that hides it.
_HIDDEN = (
    ("/tmp", "PrivateTmp=yes"),
    ("/var/tmp", "PrivateTmp=yes"),
    ("/home", "ProtectHome=yes"),
    ("/root", "ProtectHome=yes"),
    ("/run/user", "ProtectHome=yes"),
)


def configured_paths(raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """("table.key", value) for each file the raw config names."""
    for table, key in PATH_KEYS:
        section = raw.get(table, {})
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str):
            yield f"{table}.{key}", value


def hidden_by_unit(value: str) -> str | None:
    """The unit setting that hides `value` from the service, or None."""
    path = PurePosixPath(value)
    for top, setting in _HIDDEN:
        if path == PurePosixPath(top) or PurePosixPath(top) in path.parents:
            return setting
    return None


def path_problems(
    raw: dict[str, Any], config_dir: str, root: Path | None, at: Callable[[str], Path]
) -> tuple[list[str], list[str]]:
    """(problems, warnings) for the files the config names; `root` is None for a live install."""
    problems: list[str] = []
    warnings: list[str] = []
    for name, value in configured_paths(raw):
        if not PurePosixPath(value).is_absolute():
            problems.append(
                f"{name}: {value!r} is relative; the installed config lives in "
                f"{config_dir}, so give an absolute path"
            )
        elif (setting := hidden_by_unit(value)) is not None:
            problems.append(
                f"{name}: {value} is hidden from the service ({setting} in "
                "litefleet-agent.service): put it under /usr/share/litefleet or "
                f"{config_dir} instead"
            )
        elif not at(value).exists():
            if root is None:
                problems.append(f"{name}: {value} does not exist")
            else:
                warnings.append(
                    f"warning: {name} {value} is not in the tree {root}: copy it "
                    "there before booting the image"
                )
    return problems, warnings
