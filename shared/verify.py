"""The verification core of the update path: untrusted bytes in, a verified update out.

No I/O, no clock of its own (the caller passes `now`), no state. Checks run in this order and
the first failure raises its typed `Rejected`:

1. size cap, JSON, envelope shape                 (endless data, malformed input)
2. deployment signatures against the keyring      (arbitrary installation, key compromise)
3. deployment fields, device binding, expiry      (mix-and-match, indefinite freeze)
4. release signatures, fields, profile, expiry    (arbitrary installation, mix-and-match, freeze)
5. model name, declared sizes against the device's cap   (mix-and-match, endless data)
6. input/output signature against the application (wrong software installation)
7. version against the installed one              (rollback and fast-forward attacks)

Extraneous dependencies cannot ride along: parsing refuses unknown fields, and the only bytes
a release can make a device fetch are its own artifact and the deltas from the installed model.
The same version and target again is not an error but a verified no-op (`is_current`).

Only a `VerifiedUpdate` leaves this module; anything else is a rejection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.documents import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    Deployment,
    IOSignature,
    Release,
    TensorSpec,
    load_json,
)
from shared.envelope import verify_envelope, verify_signers
from shared.errors import (
    BadSignature,
    CorruptArtifact,
    Expired,
    HashMismatch,
    IOSignatureMismatch,
    Rejected,
    SizeExceeded,
    VersionNotNewer,
    WrongDevice,
    WrongProfile,
)
from shared.keys import Keyring, PublicKey

__all__ = [
    "VerifiedUpdate",
    "check_bytes",
    "check_sizes",
    "describe_io",
    "verify_deployment",
    "verify_release",
    "verify_signed",
]


@dataclass(frozen=True)
class VerifiedUpdate:
    deployment: Deployment
    release: Release
    is_current: bool  # same version and target as installed: a verified no-op
    # key ids of the trusted keys whose signatures on the release verified: the device keeps
    # them with the installed model, to tell when a later root no longer trusts it
    signers: tuple[str, ...] = ()


def verify_signed(envelope: object, keyring: Keyring, what: str) -> dict[str, Any]:
    """`verify_envelope`, with a refusal that names any revoked key that signed `what`."""
    return _verify_signed(envelope, keyring, what)[0]


def _verify_signed(
    envelope: object, keyring: Keyring, what: str
) -> tuple[dict[str, Any], frozenset[str]]:
    """`verify_signed`, also returning the key ids of the valid trusted signatures."""
    try:
        return verify_signers(envelope, keyring)
    except BadSignature as e:
        revoked = [r for r in keyring.revoked if _signed_by(envelope, r.key)]
        if not revoked:
            raise
        names = ", ".join(
            f"{r.key.keyid[:16]} (revoked by root version {r.version})" for r in revoked
        )
        raise BadSignature(f"{what} is signed by revoked key {names}; {e}") from e


def _signed_by(envelope: object, key: PublicKey) -> bool:
    """Whether `envelope` carries a valid signature by `key` (for naming it in a refusal)."""
    try:
        verify_envelope(envelope, Keyring((key,), 1))
    except Rejected:
        return False
    return True


def verify_release(envelope: object, keyring: Keyring, profile: str, now: datetime) -> Release:
    return _verify_release(envelope, keyring, profile, now)[0]


def _verify_release(
    envelope: object, keyring: Keyring, profile: str, now: datetime
) -> tuple[Release, frozenset[str]]:
    signed, signers = _verify_signed(envelope, keyring, "release")
    release = Release.parse_signed(signed, "release.signed")
    if release.profile != profile:
        raise WrongProfile(
            f"release is for profile {release.profile!r}, this device is {profile!r}"
        )
    if release.expires_at <= now:
        raise Expired(f"release {release.name}@{release.version} expired at {release.expires}")
    return release, signers


def verify_deployment(
    data: bytes,
    keyring: Keyring,
    *,
    device_id: str,
    profile: str,
    model_name: str,
    installed_version: int,
    installed_sha256: str | None,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    max_model_bytes: int | None = None,
    expected_io: IOSignature | None = None,
) -> VerifiedUpdate:
    """Verify a deployment document for this device, or raise the `Rejected` that stops it.

    `max_model_bytes` caps every size the release declares (target, artifact, deltas);
    `expected_io` is the input/output signature the application runs today.
    """
    envelope = load_json(data, max_bytes)
    signed = verify_signed(envelope, keyring, "deployment")
    deployment = Deployment.parse_signed(signed)
    if deployment.device_id != device_id:
        raise WrongDevice(f"deployment is for device {deployment.device_id!r}, not {device_id!r}")
    if deployment.expires_at <= now:
        raise Expired(f"deployment {deployment.rollout_id} expired at {deployment.expires}")
    release, signers = _verify_release(deployment.release, keyring, profile, now)
    if release.name != model_name:
        raise WrongProfile(
            f"release is for model {release.name!r}, this device runs {model_name!r}"
        )
    if max_model_bytes is not None:
        check_sizes(release, max_model_bytes)
    if expected_io is not None and not release.io.fits(expected_io):
        raise IOSignatureMismatch(
            f"release declares {describe_io(release.io)}, the application expects "
            f"{describe_io(expected_io)}"
        )
    # a device may run another of the release's variants than its target: that is current too
    running = release.target.sha256 == installed_sha256 or (
        release.variants is not None
        and installed_sha256 is not None
        and release.variants.by_sha256(installed_sha256) is not None
    )
    same = release.version == installed_version and running
    if not same and release.version <= installed_version:
        raise VersionNotNewer(
            f"release version {release.version} is not newer than installed {installed_version}"
        )
    return VerifiedUpdate(deployment, release, is_current=same, signers=tuple(sorted(signers)))


def check_bytes(data: bytes | bytearray, size: int, sha256: str, what: str) -> None:
    """Bytes as signed: exactly `size` bytes hashing to `sha256`, or the typed refusal."""
    if len(data) < size:
        raise CorruptArtifact(f"{what} is truncated: {len(data)} of {size} bytes")
    if len(data) > size:
        raise SizeExceeded(f"{what} has {len(data)} bytes, {size} signed")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise HashMismatch(f"{what} hashes to {actual[:12]}, signed {sha256[:12]}")


def check_sizes(release: Release, max_model_bytes: int) -> None:
    """Refuse a release that declares more bytes than this device accepts."""
    sizes = [("target", release.target.size), ("artifact", release.artifact.size)]
    sizes += [(f"delta from {d.base_sha256[:12]}", d.size) for d in release.deltas]
    for v in release.variants.candidates if release.variants is not None else ():
        sizes += [(f"variant {v.name}", v.size), (f"variant {v.name}'s artifact", v.artifact_size)]
    for what, size in sizes:
        if size > max_model_bytes:
            raise SizeExceeded(
                f"{what} declares {size} bytes, over this device's {max_model_bytes}"
            )


def describe_io(io: IOSignature) -> str:
    """`in float32[1,28,28,1] -> out float32[1,10]`, for rejection details."""

    def part(specs: tuple[TensorSpec, ...]) -> str:
        return ", ".join(f"{t.dtype}[{','.join(str(d) for d in t.shape)}]" for t in specs)

    return f"in {part(io.inputs)} -> out {part(io.outputs)}"
