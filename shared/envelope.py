"""Signed envelopes in the manner of TUF: `{"signed": {...}, "signatures": [...]}`.

Each signature is `{"keyid": <hex sha256 of the raw public key>, "sig": <base64 Ed25519
signature over canonical_json(signed)>}`. Verification counts distinct trusted keys with a
valid signature; unknown key ids are ignored and one key signing twice counts once.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from shared.canonical import canonical_json
from shared.errors import BadSignature, MalformedDocument
from shared.keys import Keyring, SigningKey

__all__ = ["add_signature", "sign_envelope", "verify_envelope", "verify_signers"]


def sign_envelope(signed: dict[str, Any], keys: list[SigningKey]) -> dict[str, Any]:
    """Wrap `signed` in an envelope signed by each of `keys`."""
    envelope: dict[str, Any] = {"signed": signed, "signatures": []}
    for key in keys:
        add_signature(envelope, key)
    return envelope


def add_signature(envelope: dict[str, Any], key: SigningKey) -> None:
    message = canonical_json(envelope["signed"])
    envelope["signatures"].append(
        {"keyid": key.keyid, "sig": base64.b64encode(key.sign(message)).decode("ascii")}
    )


def verify_envelope(envelope: Any, keyring: Keyring) -> dict[str, Any]:
    """Return the `signed` part once `keyring.threshold` distinct trusted keys signed it."""
    return verify_signers(envelope, keyring)[0]


def verify_signers(envelope: Any, keyring: Keyring) -> tuple[dict[str, Any], frozenset[str]]:
    """`verify_envelope`, also returning the key ids of the trusted keys that validly signed.

    The device records who signed an installed release, so that a later root that drops those
    keys can tell the release is no longer trusted.
    """
    if not isinstance(envelope, dict):
        raise MalformedDocument("a signed document is a JSON object", "$")
    extra = set(envelope) - {"signed", "signatures"}
    if extra:
        raise MalformedDocument("unknown field", sorted(extra)[0])
    signed = envelope.get("signed")
    signatures = envelope.get("signatures")
    if not isinstance(signed, dict):
        raise MalformedDocument("missing or not an object", "signed")
    if not isinstance(signatures, list):
        raise MalformedDocument("missing or not a list", "signatures")
    message = canonical_json(signed)
    valid: set[str] = set()
    for index, entry in enumerate(signatures):
        if not isinstance(entry, dict):
            raise MalformedDocument("not an object", f"signatures[{index}]")
        keyid, sig = entry.get("keyid"), entry.get("sig")
        if not isinstance(keyid, str) or not isinstance(sig, str):
            raise MalformedDocument("keyid and sig must be strings", f"signatures[{index}]")
        key = keyring.get(keyid)
        if key is None or keyid in valid:
            continue
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        if key.verify(raw, message):
            valid.add(keyid)
    if not keyring.reached_by(valid):
        raise BadSignature(
            f"{len(valid)} valid signature(s) from trusted keys, {keyring.threshold} required"
        )
    return signed, frozenset(valid)
