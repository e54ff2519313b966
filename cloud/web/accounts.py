"""Dashboard users, their passwords and API tokens.

A user has a role: a `viewer` sees everything; an `operator` may also pause, resume and abort
rollouts, deploy releases and send commands. Passwords are hashed with argon2id (argon2-cffi,
its default parameters); API tokens are random and only their sha256 is stored, so the store
never holds a secret that logs anyone in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cloud.store import Store
from cloud.store import dashboard as queries

__all__ = [
    "Role",
    "User",
    "UserRefused",
    "add_user",
    "authenticate",
    "new_token",
    "remove_user",
    "user_for_token",
]

TOKEN_PREFIX = "lft_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_hasher = PasswordHasher()
# verified against when the user does not exist, so a wrong name costs what a wrong password does
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"


class UserRefused(ValueError):
    """A user that cannot be added or removed (bad name, name taken, no such user)."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        """May change the fleet (rollouts, deployments, commands)."""
        return self.role is Role.OPERATOR


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise UserRefused(
            f"user name {name!r}: 1-64 letters, digits, '_', '.', '@', '-', "
            "starting with a letter or digit"
        )


def add_user(db: Store, name: str, role: Role, *, password: bool = True) -> str:
    """Add a user; returns the one-time password (shown once, stored only as its hash), or ""
    for a token-only user."""
    _check_name(name)
    secret = secrets.token_urlsafe(15) if password else ""
    if not queries.insert_user(db, name, role.value, _hasher.hash(secret) if secret else ""):
        raise UserRefused(f"user {name!r} exists (litefleet users remove {name} first)")
    return secret


def remove_user(db: Store, name: str) -> None:
    if not queries.delete_user(db, name):
        raise UserRefused(f"no user {name!r}")


def new_token(db: Store, name: str) -> str:
    """A new API token for an existing user."""
    if queries.user(db, name) is None:
        raise UserRefused(f"no user {name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    queries.insert_token(db, name, _token_sha256(token))
    return token


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user(row: dict[str, object]) -> User | None:
    try:
        return User(str(row["name"]), Role(str(row["role"])))
    except ValueError:  # a role this version does not know: no access
        return None


def authenticate(db: Store, name: str, password: str) -> User | None:
    """The user when the password is theirs; None otherwise (same cost either way)."""
    row = queries.user(db, name) if _NAME.match(name) else None
    stored = str(row["password_hash"]) if row is not None else ""
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not stored:
        return None
    if _hasher.check_needs_rehash(stored):
        queries.set_password_hash(db, name, _hasher.hash(password))
    return _user(row)


def user_for_token(db: Store, token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = queries.user_for_token(db, _token_sha256(token))
    return _user(row) if row is not None else None


def user_named(db: Store, name: str) -> User | None:
    row = queries.user(db, name)
    return _user(row) if row is not None else None
