"""Whether the releases installed here are still trusted, and the version floor that follows.

A new release must have a higher version than the installed one (`version_not_newer`
otherwise): the guard against rollback. A thief who stole a release key before it was rotated
out can sign a release at version 2^63-1 (TUF's fast-forward attack); a device that installed
it would refuse every legitimate release afterwards, even once the root no longer lists the
stolen key. So, as TUF forgets its trusted timestamp and snapshot versions when their keys
rotate, the device looks at what it has installed again whenever the release keyring changes
(a new root, in this process or written by `apply`):

- every release the updater installs is recorded with the key ids whose signatures on it
  verified (`update_models.signers`). A model installed before they were recorded is judged by
  the signed deployment that installed it, from the journal. When neither is on record the
  release counts as trusted (the floor stays, as it always did): no record is no evidence, and
  lowering the floor on none would let any still-valid older deployment roll the device back.
- the `active` and the `previous` release whose signers no longer reach the current root's
  release threshold are marked distrusted (`update_models.distrusted`) and reported once:
  `rejected` with the reason `untrusted_installed` on `devices/{id}/update`, no rollout id.
- a distrusted active release holds nothing back: the floor is the version of the previous
  release when that one is still trusted, else 0, so the next release that verifies under the
  current root installs whatever its version. The distrusted model keeps serving until then:
  nothing is rolled back, the device never loses its working model.

Lowering the floor lets no revoked key back in: only releases that verify under the current
root are ever accepted. A root that lists the keys again makes the release trusted again
(marked back, its version the floor once more).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.update.context import UpdateContext
from agent.update.journal import JournalEntry, ModelRecord
from agent.update.modelstore import ACTIVE, PREVIOUS
from shared.documents import load_json
from shared.envelope import verify_envelope
from shared.errors import BadSignature
from shared.keys import Keyring
from shared.messages import ModelIdentity
from shared.phases import Reason, UpdatePhase

__all__ = ["Distrusted", "InstalledTrust"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distrusted:
    """An installed release the current root no longer trusts (`which`: active or previous)."""

    which: str
    record: ModelRecord
    detail: str


class InstalledTrust:
    """The updater's view of its installed releases' signers; callers hold the updater's lock."""

    def __init__(self, ctx: UpdateContext) -> None:
        self._ctx = ctx
        self._seen: tuple[Keyring, str | None, str | None] | None = None

    def review(self, keyring: Keyring) -> list[Distrusted]:
        """Judge `active` and `previous` under `keyring`; report and return the newly distrusted.

        Does nothing while the keyring and both links are what they were at the last review.
        """
        store = self._ctx.store
        active, previous = store.link(ACTIVE), store.link(PREVIOUS)
        seen = (keyring, active, previous)
        if seen == self._seen:
            return []
        found = []
        for which, sha in ((ACTIVE, active), (PREVIOUS, previous)):
            if sha is None or (which == PREVIOUS and sha == active):
                continue
            record = self._ctx.journal.model(sha)
            if record is None or record.version == 0:
                continue  # the configured initial model: no release, nothing held back
            trusted = self._trusted(record, keyring)
            if trusted == (not record.distrusted):
                continue
            self._ctx.journal.distrust_model(sha, not trusted)
            if trusted:
                log.info(
                    "the %s release %s@%s is trusted again under the current root",
                    which,
                    record.name,
                    record.version,
                )
                continue
            distrusted = Distrusted(which, record, _detail(which, record, keyring))
            self._report(distrusted)
            found.append(distrusted)
        self._seen = seen
        return found

    def floor(self, active: ModelIdentity) -> tuple[int, str | None]:
        """(version, sha256) a new release is compared with: the active release's, or, when the
        current root no longer trusts it, the previous release's if that one is trusted, else
        (0, None): any release that verifies is newer."""
        record = self._ctx.journal.model(active.sha256)
        if record is None or not record.distrusted:
            return active.version, active.sha256
        previous = self._ctx.store.link(PREVIOUS)
        if previous is not None and previous != active.sha256:
            before = self._ctx.journal.model(previous)
            if before is not None and not before.distrusted:
                return before.version, None
        return 0, None

    def _trusted(self, record: ModelRecord, keyring: Keyring) -> bool:
        if record.signers is not None:
            return keyring.reached_by(record.signers)
        text = self._ctx.journal.installing_deployment(record.sha256, record.version)
        if text is None:
            return True  # not on record: the floor stays (see the module docstring)
        try:
            release = load_json(text.encode("utf-8"))["signed"]["release"]
            verify_envelope(release, Keyring(keyring.keys, keyring.threshold))
        except BadSignature:
            return False
        except Exception:  # a journal row that does not read: no evidence either way
            log.warning("the deployment that installed %s does not read", record.sha256[:12])
            return True
        return True

    def _report(self, distrusted: Distrusted) -> None:
        record = distrusted.record
        log.warning("%s", distrusted.detail)
        entry = JournalEntry(0, "", record.name, record.version, record.sha256, UpdatePhase.IDLE)
        self._ctx.steps.report(
            UpdatePhase.REJECTED,
            entry,
            reason=Reason.UNTRUSTED_INSTALLED,
            detail=distrusted.detail,
        )


def _detail(which: str, record: ModelRecord, keyring: Keyring) -> str:
    """`the active release digits@9223372036854775807 (3a6fb0ce72a3) is not signed by 1 of
    the current root's release keys (signed by 1a2b3c4d5e6f7a8b, revoked by root version 2):
    ...`"""
    revoked = {r.key.keyid: r.version for r in keyring.revoked}
    signers = ", ".join(
        k[:16] + (f", revoked by root version {revoked[k]}" if k in revoked else "")
        for k in record.signers or ()
    )
    what = f"the {which} release {record.name}@{record.version} ({record.sha256[:12]})"
    why = f"is not signed by {keyring.threshold} of the current root's release keys"
    if signers:
        why += f" (signed by {signers})"
    after = "its version no longer holds newer releases back"
    if which == ACTIVE:
        after += "; it keeps serving until a trusted release installs"
    return f"{what} {why}: {after}"
