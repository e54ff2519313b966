"""The device's root of trust: which keys sign releases today, persisted in the state dir.

The device starts from the root in its config (`[trust] root`, or `[trust] keys` as an
implicit version 1) and walks newer roots as they arrive, on the retained `trust/root` topic
or in a deployment bundle (`roots.json` next to the deployment file), by TUF's rule (see
`shared.root`). The newest trusted root is kept in `state_dir/trust.json`:

    {"schema": "litefleet.trust-state/1", "root": <signed root envelope>,
     "revoked": [{"key": "<64 hex>", "version": 3}, ...]}

`revoked` lists release keys that an earlier trusted root held and a later one removed, so a
refusal can name the revoked key that signed. The file is replaced atomically (temp file,
fsync, rename) and only after the whole chain verified; writers (the daemon, `apply`) take
`state_dir/trust.lock` and re-read the file first, so two of them cannot roll each other back.
A reader notices a replaced file by its inode and re-reads it.

`keyring()` is what the updater and the command gate verify with: the trusted root's release
keys, or `Expired` once that root expired (a freeze: newer roots are being withheld).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import TrustConfig
from localio.atomic import write_atomic
from shared.documents import load_json
from shared.envelope import verify_envelope
from shared.errors import BadSignature, MalformedDocument, Rejected
from shared.keys import Keyring, PublicKey, RevokedKey
from shared.root import TrustedRoot, check_fresh, describe, parse_root, walk_chain

__all__ = ["TRUST_FILE", "TrustStore"]

log = logging.getLogger(__name__)

TRUST_FILE = "trust.json"
LOCK_FILE = "trust.lock"
STATE_SCHEMA = "litefleet.trust-state/1"
MAX_STATE_BYTES = 256 * 1024
MAX_REVOKED = 256  # revoked keys remembered for refusal details; the oldest are forgotten


class TrustStore:
    """The trusted root of one device, shared by the daemon's threads."""

    def __init__(
        self,
        config: TrustConfig,
        state_dir: Path,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._initial = config.initial_root()
        self._path = state_dir / TRUST_FILE
        self._lock_path = state_dir / LOCK_FILE
        self._now = now
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._trusted = self._initial
        self._revoked: tuple[RevokedKey, ...] = ()
        self._broken: str | None = None
        with self._lock:
            self._reload()

    # public -----------------------------------------------------------------------------

    def current(self) -> TrustedRoot:
        with self._lock:
            self._reload()
            return self._trusted

    def keyring(self) -> Keyring:
        """The release keyring to verify with now, or the `Rejected` that refuses everything."""
        with self._lock:
            self._reload()
            if self._broken is not None:
                raise BadSignature(self._broken)
            check_fresh(self._trusted, self._now())
            return self._trusted.root.release_keyring(self._revoked)

    def offer(self, data: bytes) -> list[TrustedRoot]:
        """Walk a root chain message (or one root); persist and return the roots newly trusted.

        Raises the `Rejected` of the first root that fails; the trusted root stays as it was.
        """
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, _FileLock(self._lock_path):
            self._reload()
            if self._broken is not None:  # never walk from the config's root instead
                raise BadSignature(self._broken)
            walked_from = self._trusted
            trusted, walked = walk_chain(walked_from, data, self._now())
            if not walked:
                return []
            revoked = self._revoked
            for before, after in zip([walked_from, *walked], walked, strict=False):
                revoked = _revoke(revoked, before, after)
            state = {
                "schema": STATE_SCHEMA,
                "root": trusted.envelope,
                "revoked": [{"key": r.key.hex, "version": r.version} for r in revoked],
            }
            write_atomic(self._path, json.dumps(state, sort_keys=True).encode("utf-8"), 0o644)
            _fsync_dir(self._path.parent)
            self._trusted, self._revoked, self._broken = trusted, revoked, None
            self._stamp = _stamp(self._path)
            log.info(
                "trusted %s (walked %s)",
                describe(trusted.root),
                ", ".join(f"v{r.version}" for r in walked),
            )
            return walked

    # loading ----------------------------------------------------------------------------

    def _reload(self) -> None:
        stamp = _stamp(self._path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            self._trusted, self._revoked, self._broken = self._initial, (), None
            return
        try:
            trusted, revoked = _read_state(self._path.read_bytes())
        except (OSError, Rejected) as e:
            self._broken = (
                f"the trusted root in {self._path} is unreadable ({e}); restore it "
                "or re-provision the device's trust"
            )
            log.error("%s", self._broken)
            return
        self._broken = None
        if trusted.version < self._initial.version:  # re-provisioned with a newer config root
            self._trusted, self._revoked = self._initial, ()
        else:
            self._trusted, self._revoked = trusted, revoked


def _read_state(data: bytes) -> tuple[TrustedRoot, tuple[RevokedKey, ...]]:
    """The persisted root (re-checked against its own root keys) and the revoked keys."""
    state = load_json(data, MAX_STATE_BYTES)
    if not isinstance(state, dict) or state.get("schema") != STATE_SCHEMA:
        raise MalformedDocument(f"not a {STATE_SCHEMA} file", "schema")
    envelope, listed = state.get("root"), state.get("revoked")
    if not isinstance(envelope, dict) or not isinstance(listed, list):
        raise MalformedDocument("expected a root envelope and a revoked list", "root")
    root = parse_root(envelope.get("signed"), "root.signed")
    verify_envelope(envelope, root.root_keyring())
    revoked = []
    for i, item in enumerate(listed[:MAX_REVOKED]):
        version = item.get("version") if isinstance(item, dict) else None
        if (
            isinstance(version, bool)
            or not isinstance(version, int)
            or not isinstance(item.get("key"), str)
        ):
            raise MalformedDocument("expected {key, version}", f"revoked[{i}]")
        revoked.append(RevokedKey(PublicKey.from_hex(item["key"]), version))
    return TrustedRoot(root, envelope), tuple(revoked)


def _revoke(
    revoked: tuple[RevokedKey, ...], before: TrustedRoot, after: TrustedRoot
) -> tuple[RevokedKey, ...]:
    """Release keys `before` held and `after` dropped join the revoked; re-added ones leave."""
    kept = {k.raw for k in after.root.release_keys}
    out = [r for r in revoked if r.key.raw not in kept]
    known = {r.key.raw for r in out}
    out += [
        RevokedKey(k, after.version)
        for k in before.root.release_keys
        if k.raw not in kept and k.raw not in known
    ]
    return tuple(out[-MAX_REVOKED:])


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileLock:
    """An exclusive `flock` on a file, so the daemon and `apply` write the root one at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> _FileLock:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
