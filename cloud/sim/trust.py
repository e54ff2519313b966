"""The root chain for a whole simulated fleet: walked once per payload, adopted per device.

Every simulated device walks the retained `trust/root` chain the way the agent does
(`shared.root.walk_chain`: TUF's rule from the root it trusts now, the last root reached must
not have expired, any refusal keeps the trusted root). Thousands of devices in one process get
the same payload, mostly from the same root, so the verdict is computed once per (payload
sha256, root walked from) and shared; each device keeps its own trusted root and moves on
independently. The verdict is a value, never a re-raised exception, so a refusal shared by
every device does not grow one traceback per device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from shared.errors import Rejected
from shared.keys import Keyring
from shared.root import MAX_CHAIN_BYTES, TrustedRoot, check_fresh, walk_chain

__all__ = ["ChainVerdict", "RootChains", "Trust"]

MAX_VERDICTS = 64  # distinct (payload, root) pairs remembered; the oldest are forgotten


@dataclass(frozen=True)
class Trust:
    """A device's trusted root and the release keyring it verifies with (shared, immutable)."""

    root: TrustedRoot
    keyring: Keyring

    @classmethod
    def of(cls, root: TrustedRoot) -> Trust:
        return cls(root, root.root.release_keyring())

    @property
    def version(self) -> int:
        return self.root.version


@dataclass(frozen=True)
class ChainVerdict:
    """What walking one chain from one root gave: the trust to adopt (None: nothing newer), or
    the refusal that keeps the device's root."""

    adopt: Trust | None = None
    refused: Rejected | None = None


class RootChains:
    """Walk verdicts shared by every device of a fleet (one event loop: no locking)."""

    def __init__(self, max_verdicts: int = MAX_VERDICTS) -> None:
        self._max = max_verdicts
        self._verdicts: dict[tuple[str, int, str], ChainVerdict] = {}
        self.walks = 0  # chains actually verified (the rest were shared)

    def walk(self, current: Trust, payload: bytes, now: datetime) -> ChainVerdict:
        if len(payload) > MAX_CHAIN_BYTES:  # refused before it is hashed or parsed
            return self._compute(current, payload, now)
        key = (hashlib.sha256(payload).hexdigest(), current.version, _identity(current.root))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._compute(current, payload, now)
            if len(self._verdicts) >= self._max:
                del self._verdicts[next(iter(self._verdicts))]
            self._verdicts[key] = verdict
        elif verdict.adopt is not None:  # walked earlier: the new root may have expired since
            try:
                check_fresh(verdict.adopt.root, now)
            except Rejected as e:
                return ChainVerdict(refused=e)
        return verdict

    def _compute(self, current: Trust, payload: bytes, now: datetime) -> ChainVerdict:
        self.walks += 1
        try:
            trusted, walked = walk_chain(current.root, payload, now)
        except Rejected as e:
            return ChainVerdict(refused=e)
        return ChainVerdict(adopt=Trust.of(trusted) if walked else None)


def _identity(root: TrustedRoot) -> str:
    """What tells two roots of one version apart: the signed part's sha256, or for the implicit
    version 1 (no signed form) its keys."""
    if root.envelope is not None:
        return root.sha256
    r = root.root
    return f"implicit:{r.root_threshold}:" + ",".join(k.hex for k in r.root_keys)
