"""The root of trust (`litefleet.root/1`): which keys sign releases, and which keys sign roots.

A root is a signed envelope (see `shared.envelope`) whose `signed` part is:

    {"schema": "litefleet.root/1", "version": 2, "issued": "2026-01-31T12:00:00Z",
     "expires": "2027-01-31T12:00:00Z",
     "release_keys": {"keys": ["<64 hex>", ...], "threshold": 1},
     "root_keys": {"keys": ["<64 hex>", ...], "threshold": 1}}

Release keys sign releases, deployments and operator commands; root keys sign the next root.
A device starts from the root in its config (or, with only `[trust] keys`, an implicit version 1
whose release keys and root keys are both the configured keys) and moves on by TUF's rule:

    root N+1 is accepted only when signed by a threshold of root N's root keys AND a threshold
    of its own root keys, and its version is exactly N+1.

`update_root(current, envelope)` applies that rule to one step; `walk_chain(current, data, now)`
takes the retained chain message (`litefleet.root-chain/1`: the roots since version 2, oldest
first), walks every version above the current one in order, and refuses the result when the
last root it reaches has expired (intermediate roots may have expired: they are only walked
through). A root of the same version as the trusted one is a no-op when identical and a fork
(`version_not_newer`) when not; a lower version is a rollback (`version_not_newer`).

Pure: bytes in, a typed `Root` or a `Rejected` out. The caller persists and decides.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.canonical import canonical_json
from shared.documents import load_json, parse_time
from shared.envelope import verify_envelope
from shared.errors import BadSignature, Expired, MalformedDocument, Rejected, VersionNotNewer
from shared.keys import Keyring, PublicKey, RevokedKey
from shared.phases import Reason

__all__ = [
    "BUNDLE_FILE",
    "CHAIN_SCHEMA",
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_ROOTS",
    "MAX_ROOT_KEYS",
    "ROOT_SCHEMA",
    "MissingRoot",
    "Root",
    "TrustedRoot",
    "build_chain",
    "check_fresh",
    "describe",
    "implicit_root",
    "parse_chain",
    "parse_root",
    "self_signed_root",
    "update_root",
    "walk_chain",
]

ROOT_SCHEMA = "litefleet.root/1"
BUNDLE_FILE = "roots.json"  # the chain's name in a deployment bundle (`litefleet deploy --out`)
CHAIN_SCHEMA = "litefleet.root-chain/1"
MAX_ROOT_KEYS = 16  # keys per role
MAX_CHAIN_ROOTS = 128  # roots carried in one chain message
MAX_CHAIN_BYTES = 512 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class MissingRoot(Rejected):
    """A root whose predecessor is missing: the chain has a gap, nothing after it can be checked."""

    reason = Reason.MISSING_ROOT


@dataclass(frozen=True)
class Root:
    """One verified-or-built root: the release keyring and the root keyring at a version."""

    version: int
    issued: str
    expires: str | None  # None only for the implicit version 1 built from config keys
    release_keys: tuple[PublicKey, ...]
    release_threshold: int
    root_keys: tuple[PublicKey, ...]
    root_threshold: int

    def __post_init__(self) -> None:
        for role, keys, threshold in (
            ("release_keys", self.release_keys, self.release_threshold),
            ("root_keys", self.root_keys, self.root_threshold),
        ):
            if not keys or len(keys) > MAX_ROOT_KEYS:
                raise MalformedDocument(f"between 1 and {MAX_ROOT_KEYS} keys", role)
            if len({k.raw for k in keys}) != len(keys):
                raise MalformedDocument("a key is listed twice", role)
            if not 1 <= threshold <= len(keys):
                raise MalformedDocument(
                    f"threshold must be between 1 and {len(keys)}", f"{role}.threshold"
                )

    @property
    def expires_at(self) -> datetime | None:
        return parse_time(self.expires) if self.expires is not None else None

    def release_keyring(self, revoked: tuple[RevokedKey, ...] = ()) -> Keyring:
        return Keyring(self.release_keys, self.release_threshold, revoked)

    def root_keyring(self) -> Keyring:
        return Keyring(self.root_keys, self.root_threshold)

    def to_signed(self) -> dict[str, Any]:
        if self.expires is None:
            raise ValueError("the implicit root has no signed form")
        return {
            "schema": ROOT_SCHEMA,
            "version": self.version,
            "issued": self.issued,
            "expires": self.expires,
            "release_keys": {
                "keys": [k.hex for k in self.release_keys],
                "threshold": self.release_threshold,
            },
            "root_keys": {
                "keys": [k.hex for k in self.root_keys],
                "threshold": self.root_threshold,
            },
        }


@dataclass(frozen=True)
class TrustedRoot:
    """A root together with the envelope it came in (None for the implicit version 1)."""

    root: Root
    envelope: dict[str, Any] | None

    @property
    def version(self) -> int:
        return self.root.version

    @property
    def sha256(self) -> str:
        """The sha256 of the canonical signed part: two roots are the same root when equal."""
        if self.envelope is None:
            return ""
        return hashlib.sha256(canonical_json(self.envelope["signed"])).hexdigest()


def implicit_root(keys: tuple[PublicKey, ...], threshold: int) -> TrustedRoot:
    """Version 1 for a device configured with `[trust] keys` only: those keys sign both."""
    return TrustedRoot(Root(1, "", None, keys, threshold, keys, threshold), None)


def _keys(value: Any, path: str) -> tuple[tuple[PublicKey, ...], int]:
    if not isinstance(value, dict) or set(value) != {"keys", "threshold"}:
        raise MalformedDocument("expected {keys, threshold}", path)
    keys, threshold = value["keys"], value["threshold"]
    if not isinstance(keys, list) or len(keys) > MAX_ROOT_KEYS:
        raise MalformedDocument(f"expected a list of at most {MAX_ROOT_KEYS} keys", f"{path}.keys")
    for i, k in enumerate(keys):
        if not isinstance(k, str) or not _HEX64.match(k):
            raise MalformedDocument(
                "a public key is 64 lowercase hex characters", f"{path}.keys[{i}]"
            )
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise MalformedDocument("expected an integer", f"{path}.threshold")
    return tuple(PublicKey.from_hex(k) for k in keys), threshold


def parse_root(signed: Any, path: str = "signed") -> Root:
    """The typed root in an envelope's `signed` part (signatures are checked by the caller)."""
    if not isinstance(signed, dict):
        raise MalformedDocument("expected an object", path)
    fields = {"schema", "version", "issued", "expires", "release_keys", "root_keys"}
    extra = sorted(set(signed) - fields)
    if extra:
        raise MalformedDocument("unknown field", f"{path}.{extra[0]}")
    missing = sorted(fields - set(signed))
    if missing:
        raise MalformedDocument("missing", f"{path}.{missing[0]}")
    if signed["schema"] != ROOT_SCHEMA:
        raise MalformedDocument(f"expected {ROOT_SCHEMA!r}", f"{path}.schema")
    version = signed["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
        raise MalformedDocument("expected an integer >= 1", f"{path}.version")
    for name in ("issued", "expires"):
        if not isinstance(signed[name], str):
            raise MalformedDocument("expected a string", f"{path}.{name}")
        parse_time(signed[name], f"{path}.{name}")
    release, release_threshold = _keys(signed["release_keys"], f"{path}.release_keys")
    root, root_threshold = _keys(signed["root_keys"], f"{path}.root_keys")
    return Root(
        version,
        signed["issued"],
        signed["expires"],
        release,
        release_threshold,
        root,
        root_threshold,
    )


def _signed_root(envelope: Any) -> Root:
    if not isinstance(envelope, dict):
        raise MalformedDocument("a signed root is a JSON object", "$")
    return parse_root(envelope.get("signed"))


def update_root(current: TrustedRoot, envelope: Any) -> TrustedRoot:
    """The next trusted root from `envelope`, by TUF's rule, or the `Rejected` that stops it.

    Expiry is not checked here: an expired root may be walked through (`walk_chain` checks the
    last one). Returns `current` itself for the identical root at the same version.
    """
    new = _signed_root(envelope)
    trusted = current.root
    if new.version <= trusted.version:
        if (
            new.version == trusted.version
            and current.envelope is not None
            and (canonical_json(envelope["signed"]) == canonical_json(current.envelope["signed"]))
        ):
            return current
        if new.version == trusted.version:
            raise VersionNotNewer(
                f"root version {new.version} differs from the trusted root of the "
                "same version: a fork, refused"
            )
        raise VersionNotNewer(
            f"root version {new.version} is older than the trusted "
            f"version {trusted.version}: a rollback, refused"
        )
    if new.version != trusted.version + 1:
        raise MissingRoot(
            f"root version {new.version} cannot be checked from trusted version "
            f"{trusted.version}: version {trusted.version + 1} is missing"
        )
    try:
        verify_envelope(envelope, trusted.root_keyring())
    except BadSignature as e:
        raise BadSignature(
            f"root version {new.version} is not signed by a threshold of root "
            f"version {trusted.version}'s root keys ({e})"
        ) from e
    try:
        verify_envelope(envelope, new.root_keyring())
    except BadSignature as e:
        raise BadSignature(
            f"root version {new.version} is not signed by a threshold of its own root keys ({e})"
        ) from e
    return TrustedRoot(new, envelope)


def self_signed_root(data: bytes, max_bytes: int = MAX_CHAIN_BYTES) -> TrustedRoot:
    """A root the device was provisioned with (its config file): signed by its own root keys."""
    envelope = load_json(data, max_bytes)
    root = _signed_root(envelope)
    verify_envelope(envelope, root.root_keyring())
    return TrustedRoot(root, envelope)


def check_fresh(root: TrustedRoot, now: datetime) -> None:
    """Refuse a root past its `expires` time (a freeze: someone withholds newer roots)."""
    expires = root.root.expires_at
    if expires is not None and expires <= now:
        raise Expired(f"root version {root.version} expired at {root.root.expires}")


def parse_chain(data: bytes, max_bytes: int = MAX_CHAIN_BYTES) -> list[Any]:
    """The root envelopes in a chain message (or in one bare root), oldest first; unverified."""
    value = load_json(data, max_bytes)
    if isinstance(value, dict) and "signed" in value:
        return [value]
    if not isinstance(value, dict) or set(value) != {"schema", "roots"}:
        raise MalformedDocument(f"expected a {CHAIN_SCHEMA} message or a signed root", "$")
    if value["schema"] != CHAIN_SCHEMA:
        raise MalformedDocument(f"expected {CHAIN_SCHEMA!r}", "schema")
    roots = value["roots"]
    if not isinstance(roots, list) or not 1 <= len(roots) <= MAX_CHAIN_ROOTS:
        raise MalformedDocument(f"expected a list of 1 to {MAX_CHAIN_ROOTS} roots", "roots")
    return roots


def walk_chain(
    current: TrustedRoot, data: bytes, now: datetime, max_bytes: int = MAX_CHAIN_BYTES
) -> tuple[TrustedRoot, list[TrustedRoot]]:
    """Walk a chain message from `current`: (the last root reached, the roots newly trusted).

    Roots at or below the trusted version are history and skipped, except the last one: the
    newest root of a chain must be newer than the trusted one (a rollback otherwise), or the
    very same root (a no-op; a different root of that version is a fork). The last root reached must not have expired; if it has, the
    whole walk is refused and `current` stays trusted.
    """
    envelopes = parse_chain(data, max_bytes)
    trusted, walked = current, []
    last = len(envelopes) - 1
    for index, envelope in enumerate(envelopes):
        try:
            version = _signed_root(envelope).version
            if version <= trusted.version and index < last:
                continue  # history this device already walked past
            step = update_root(trusted, envelope)
        except MalformedDocument as e:
            raise MalformedDocument(str(e), f"roots[{index}]") from e
        if step is not trusted:
            walked.append(step)
            trusted = step
    if walked:
        check_fresh(trusted, now)
    return trusted, walked


def build_chain(envelopes: list[dict[str, Any]]) -> dict[str, Any]:
    """The retained chain message: the newest `MAX_CHAIN_ROOTS` roots, oldest first."""
    return {"schema": CHAIN_SCHEMA, "roots": envelopes[-MAX_CHAIN_ROOTS:]}


def describe(root: Root) -> str:
    """`root v3: release keys 1a2b..,3c4d.. (2 of 2), root keys 9f8e.. (1 of 1), expires ...`"""

    def ids(keys: tuple[PublicKey, ...]) -> str:
        return ",".join(k.keyid[:12] for k in keys)

    return (
        f"root v{root.version}: release keys {ids(root.release_keys)} "
        f"({root.release_threshold} of {len(root.release_keys)}), root keys "
        f"{ids(root.root_keys)} ({root.root_threshold} of {len(root.root_keys)}), "
        f"expires {root.expires or 'never'}"
    )
