"""Whether devices will accept what this cloud signs: its release key against the current root.

Devices verify releases, deployments and commands with the release keys of the newest root
they trust (`agent.update.trust`): the root must not have expired, and a threshold of its
release keys must have signed (`Keyring.reached_by`, the count `verify_envelope` makes).
`litefleet keys rotate` may remove the `[signing] key` from the root, or raise the threshold
above what the cloud signs alone; everything it signed afterwards would be refused by every
device, one refusal at a time. So whatever signs for devices checks here first, by the same
rule, and signs nothing when the check fails:

* `check_signers` — the keys the cloud signs with (`release`, `deploy`, `command`, `capture`,
  the dashboard's actions, `serve`'s upload grants);
* `check_signed` — a document signed earlier (the release a deployment carries, the stored
  deployments of a rollout's next wave), by the key ids of its signatures.

The failure is an `UntrustedSigner` whose message is one line naming the key and what to do.
The cloud holds one `[signing] key`; a root whose release threshold is above 1 needs
signatures this cloud cannot make alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloud.roots import current_root, stored_roots
from cloud.store import Store
from shared.envelope import verify_envelope
from shared.errors import Expired, Rejected
from shared.keys import Keyring, PublicKey, SigningKey
from shared.root import Root, TrustedRoot, check_fresh, parse_root

__all__ = ["UntrustedSigner", "check_releases", "check_signed", "check_signers", "removed_at"]


class UntrustedSigner(ValueError):
    """Devices would refuse what the cloud signs; the message says which key and what to do."""


def _ids(keys: Sequence[PublicKey] | Sequence[str]) -> str:
    return ", ".join((k if isinstance(k, str) else k.keyid)[:16] for k in keys)


def removed_at(envelopes: list[dict[str, Any]], key: PublicKey) -> int | None:
    """The root version that removed `key` from the release keys, or None when no stored root
    shows it removed. `envelopes` are the stored roots, oldest first; a key none of them lists
    was a key of the implicit version 1 when it signed the stored root version 2 (version 1's
    root keys are its release keys)."""
    roots = [parse_root(e["signed"]) for e in envelopes]
    listed = [r.version for r in roots if key in r.release_keys]
    if listed:
        after = listed[-1] + 1
        return after if after <= roots[-1].version else None
    if roots and roots[0].version == 2:
        try:
            verify_envelope(envelopes[0], Keyring((key,), 1))
        except Rejected:
            return None
        return 2
    return None


def _untrusted(store: Store, root: Root, key: PublicKey) -> UntrustedSigner:
    lists = f"configure a [signing] key the root lists: {_ids(root.release_keys)}"
    removed = removed_at(stored_roots(store), key)
    if removed is not None:
        return UntrustedSigner(
            f"[signing] key {key.keyid[:16]}: this key was removed from the root at version "
            f"{removed} by `litefleet keys rotate`; {lists}"
        )
    return UntrustedSigner(
        f"[signing] key {key.keyid[:16]} is not a release key of root version {root.version}; "
        f"{lists}"
    )


def check_signers(store: Store, keys: Sequence[SigningKey], now: datetime) -> TrustedRoot:
    """The current root, when signatures by `keys` meet its release threshold and it has not
    expired; else `UntrustedSigner`. Only keys the root lists are counted."""
    if not keys:
        raise UntrustedSigner("no [signing] key in the config: this cloud cannot sign")
    trusted = current_root(store, keys[0])
    root = trusted.root
    try:
        check_fresh(trusted, now)
    except Expired as e:
        raise UntrustedSigner(
            f"{e}: devices refuse everything signed under it; renew it with "
            "`litefleet keys rotate --sign ROOT_KEY...` and `litefleet trust publish`"
        ) from e
    keyring = root.release_keyring()
    counted = keyring.trusted_among(k.keyid for k in keys)
    if keyring.reached_by(counted):
        return trusted
    if not counted:
        raise _untrusted(store, root, keys[0].public)
    raise UntrustedSigner(
        f"root version {root.version} needs {root.release_threshold} signatures of its "
        f"release keys; this cloud signs with {len(counted)} ({_ids(counted)}), so devices "
        "would refuse what it signs"
    )


def _signers(envelope: Any) -> list[str]:
    signatures = envelope.get("signatures") if isinstance(envelope, dict) else None
    if not isinstance(signatures, list):
        return []
    return [
        s["keyid"] for s in signatures if isinstance(s, dict) and isinstance(s.get("keyid"), str)
    ]


def check_signed(root: Root, envelope: Any, what: str, remedy: str) -> None:
    """`UntrustedSigner` unless the key ids that signed `envelope` (a document this cloud signed
    earlier) meet `root`'s release threshold: devices would refuse it (`bad_signature`)."""
    signers = _signers(envelope)
    keyring = root.release_keyring()
    if keyring.reached_by(signers):
        return
    counted = keyring.trusted_among(signers)
    raise UntrustedSigner(
        f"{what} is signed by {_ids(signers) or 'no key'}; root version {root.version} needs "
        f"{root.release_threshold} signature(s) of its release keys ({_ids(root.release_keys)}) "
        f"and it has {len(counted)}, so devices would refuse it: {remedy}"
    )


def check_releases(root: Root, ref: str, envelopes: dict[str, Any]) -> None:
    """`check_signed` for each profile's build of `ref` (`name@version`) about to be deployed:
    a device verifies the release inside its deployment with the same keys."""
    for profile, envelope in sorted(envelopes.items()):
        check_signed(
            root,
            envelope,
            f"release {ref} for profile {profile}",
            "release the model again under a new version",
        )
