"""The fleet's chain of roots on the cloud side: the next root, signed and stored; the chain.

Version 1 is the root devices are provisioned with. With `[trust] keys` in the agent config
it is implicit: the configured key(s) sign releases and roots. The cloud takes it to be the
public key of its `[signing] key` with threshold 1 (what `litefleet keys generate` sets up),
unless a signed version 1 is stored. Versions from 2 on are written by `litefleet keys rotate`
into the `roots` table, and `litefleet trust publish` sends the whole chain, retained, on
`{prefix}/trust/root` (also written as `roots.json` into every `deploy --out` bundle), so a
device that missed several rotations walks them in order.

Each device reports the root version it verifies with in its retained state (`root_version`,
kept on its row by ingest); `adoption` reads back how far the fleet has taken the newest root,
for `litefleet trust status`: a rotation is done when no device is behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloud.store import Store
from cloud.store.devices import devices_behind, root_versions
from cloud.store.releases import AlreadyStored
from cloud.store.trail import insert_root, root_envelopes
from shared.documents import format_time
from shared.envelope import sign_envelope
from shared.keys import PublicKey, SigningKey
from shared.root import Root, TrustedRoot, build_chain, implicit_root, parse_root, update_root

__all__ = [
    "Adoption",
    "RootChange",
    "adoption",
    "chain_message",
    "current_root",
    "rotate",
    "stored_roots",
]


@dataclass(frozen=True)
class RootChange:
    """What `keys rotate` asks for, relative to the current root."""

    add: tuple[PublicKey, ...] = ()
    remove: tuple[PublicKey, ...] = ()
    threshold: int | None = None
    add_root: tuple[PublicKey, ...] = ()
    remove_root: tuple[PublicKey, ...] = ()
    root_threshold: int | None = None
    lifetime: timedelta = timedelta(days=365)


def stored_roots(store: Store) -> list[dict[str, Any]]:
    """The signed root envelopes in the store, oldest first."""
    return [json.loads(e) for e in root_envelopes(store)]


def current_root(store: Store, signing_key: SigningKey | None) -> TrustedRoot:
    """The newest stored root, or the implicit version 1 of the configured signing key."""
    newest = root_envelopes(store, newest_first=True)[:1]
    if newest:
        envelope = json.loads(newest[0])
        return TrustedRoot(parse_root(envelope["signed"]), envelope)
    if signing_key is None:
        raise ValueError(
            "no root is stored and no [signing] key is configured to stand for version 1"
        )
    return implicit_root((signing_key.public,), 1)


def _apply(
    keys: tuple[PublicKey, ...],
    add: tuple[PublicKey, ...],
    remove: tuple[PublicKey, ...],
    role: str,
) -> tuple[PublicKey, ...]:
    for key in remove:
        if key not in keys:
            raise ValueError(f"cannot remove {key.keyid[:16]}: it is not a current {role} key")
    kept = tuple(k for k in keys if k not in remove)
    return kept + tuple(k for k in dict.fromkeys(add) if k not in kept)


def rotate(
    store: Store, current: TrustedRoot, change: RootChange, signers: list[SigningKey], now: datetime
) -> TrustedRoot:
    """Write root N+1: the current keys changed as asked, signed by `signers`, verified by the
    device's own rule before it is stored. ValueError or `Rejected` when it would not be."""
    old = current.root
    release = _apply(old.release_keys, change.add, change.remove, "release")
    roots = _apply(old.root_keys, change.add_root, change.remove_root, "root")
    threshold = change.threshold or min(old.release_threshold, len(release))
    root_threshold = change.root_threshold or min(old.root_threshold, len(roots))
    if not release:
        raise ValueError("no release key would be left: --add one before removing the last")
    if not roots:
        raise ValueError("no root key would be left: --add-root one before removing the last")
    for what, n, keys in (
        ("--threshold", threshold, release),
        ("--root-threshold", root_threshold, roots),
    ):
        if not 1 <= n <= len(keys):
            raise ValueError(f"{what} {n} needs between 1 and {len(keys)} keys")
    nxt = Root(
        old.version + 1,
        format_time(now),
        format_time(now + change.lifetime),
        release,
        threshold,
        roots,
        root_threshold,
    )
    envelope = sign_envelope(nxt.to_signed(), signers)
    trusted = update_root(current, envelope)  # what every device will check, checked here first
    try:
        insert_root(
            store,
            {
                "version": nxt.version,
                "sha256": trusted.sha256,
                "issued": nxt.issued,
                "expires": nxt.expires,
                "envelope": json.dumps(envelope),
                "created": time.time(),
            },
        )
    except AlreadyStored as e:
        raise ValueError(
            f"root version {nxt.version} was written by someone else meanwhile; "
            "check `litefleet trust show` and rotate again"
        ) from e
    return trusted


@dataclass(frozen=True)
class Adoption:
    """How far the fleet has taken the newest root.

    `newest` is the newest stored root's version (1, the implicit root, when none is stored);
    `versions` maps each root version devices report to how many do (0: not reported, an agent
    from before the report); `behind` counts devices below `newest` (those at 0 included) and
    `listed` is up to the limit asked for of them, furthest behind first.
    """

    newest: int
    stored: bool
    versions: dict[int, int]
    behind: int
    listed: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return sum(self.versions.values())


def adoption(store: Store, limit: int) -> Adoption:
    """The newest root and the devices per root version (one GROUP BY), and up to `limit` of
    the devices still behind it."""
    newest = root_envelopes(store, newest_first=True)[:1]
    version = parse_root(json.loads(newest[0])["signed"]).version if newest else 1
    versions = root_versions(store)
    behind = sum(n for v, n in versions.items() if v < version)
    listed = devices_behind(store, version, limit) if behind and limit > 0 else []
    return Adoption(version, bool(newest), versions, behind, listed)


def chain_message(store: Store) -> bytes | None:
    """The retained `trust/root` payload: the stored chain, or None before the first rotation."""
    envelopes = stored_roots(store)
    if not envelopes:
        return None
    return json.dumps(build_chain(envelopes), sort_keys=True).encode("utf-8")
