"""Releases: one row per (name, version, profile), the signed envelope and its artifact keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError

from cloud.store.schema import releases

if TYPE_CHECKING:
    from cloud.store.engine import Store

__all__ = [
    "AlreadyStored",
    "builds_of",
    "envelopes",
    "history",
    "insert_release",
    "latest_version",
    "previous_release",
]


class AlreadyStored(Exception):
    """A row with this key is stored already (someone else wrote it meanwhile)."""


def latest_version(store: Store, name: str, profile: str) -> int | None:
    with store.connect() as conn:
        value = conn.scalar(
            select(func.max(releases.c.version)).where(
                releases.c.name == name, releases.c.profile == profile
            )
        )
    return None if value is None else int(value)


def builds_of(store: Store, name: str, version: int) -> list[dict[str, Any]]:
    """Every profile's row of `name@version`, by profile."""
    with store.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    releases.c.profile,
                    releases.c.envelope,
                    releases.c.artifact_key,
                    releases.c.delta_keys,
                )
                .where(releases.c.name == name, releases.c.version == version)
                .order_by(releases.c.profile)
            ).mappings()
        ]


def previous_release(store: Store, name: str, profile: str) -> tuple[int, str, str] | None:
    """(version, profile, envelope) of the newest release of `name` for `profile`, else for
    any profile."""
    with store.connect() as conn:
        row = conn.execute(
            select(releases.c.version, releases.c.profile, releases.c.envelope)
            .where(releases.c.name == name)
            .order_by(case((releases.c.profile == profile, 0), else_=1), releases.c.version.desc())
            .limit(1)
        ).first()
    return None if row is None else (int(row[0]), str(row[1]), str(row[2]))


def history(store: Store, name: str, profile: str) -> list[tuple[int, str, int, str]]:
    """(version, target sha256, target size, artifact key), newest first."""
    with store.connect() as conn:
        return [
            (int(v), s, int(n), k)
            for v, s, n, k in conn.execute(
                select(
                    releases.c.version,
                    releases.c.target_sha256,
                    releases.c.target_size,
                    releases.c.artifact_key,
                )
                .where(releases.c.name == name, releases.c.profile == profile)
                .order_by(releases.c.version.desc())
            )
        ]


def insert_release(store: Store, row: dict[str, Any]) -> None:
    """AlreadyStored when this (name, version, profile) exists."""
    try:
        with store.begin() as conn:
            conn.execute(releases.insert(), row)
    except IntegrityError as e:
        raise AlreadyStored(str(e.orig)) from e


def envelopes(store: Store, name: str | None = None) -> list[str]:
    """The signed envelopes (JSON text) by name, newest version first, then profile."""
    query = select(releases.c.envelope).order_by(
        releases.c.name, releases.c.version.desc(), releases.c.profile
    )
    if name is not None:
        query = query.where(releases.c.name == name)
    with store.connect() as conn:
        return [e for (e,) in conn.execute(query)]
