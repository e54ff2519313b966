"""Ed25519 signing keys, key ids and the keyring a device trusts.

A key id is the lowercase hex sha256 of the raw 32-byte public key. Public keys travel as 64
lowercase hex characters; private keys live in PKCS#8 PEM files readable by their owner only.

`cryptography` is imported when a key is first used (a signature checked, a key made or
loaded), not when this module is: a device agent that has not yet verified anything does not
carry it (about 8 MB resident); from its first deployment or signed command on, it does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.errors import MalformedDocument

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "HEX64",
    "KeyFileError",
    "Keyring",
    "PublicKey",
    "RevokedKey",
    "SigningKey",
]

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class KeyFileError(Exception):
    """A key file that is missing, unreadable, malformed or too widely readable."""


@dataclass(frozen=True)
class PublicKey:
    """A trusted Ed25519 public key."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise MalformedDocument("an Ed25519 public key is 32 bytes", "key")

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        text = text.strip()
        if not HEX64.match(text):
            raise MalformedDocument("a public key is 64 lowercase hex characters", "key")
        return cls(bytes.fromhex(text))

    @property
    def hex(self) -> str:
        return self.raw.hex()

    @property
    def keyid(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class SigningKey:
    """An Ed25519 private key that signs canonical bytes."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw)

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"not a PEM private key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError("the private key is not an Ed25519 key")
        return cls(key)


@dataclass(frozen=True)
class RevokedKey:
    """A key that signed for an earlier root and was removed by root `version`."""

    key: PublicKey
    version: int


@dataclass(frozen=True)
class Keyring:
    """The keys a device trusts and how many distinct ones must sign.

    `revoked` names keys that earlier roots trusted, so a refusal can say which revoked key
    signed; they are never counted.
    """

    keys: tuple[PublicKey, ...]
    threshold: int = 1
    revoked: tuple[RevokedKey, ...] = ()
    _by_id: dict[str, PublicKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        by_id = {k.keyid: k for k in self.keys}
        if self.threshold > len(by_id):
            raise ValueError(
                f"threshold {self.threshold} exceeds the {len(by_id)} distinct trusted keys"
            )
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def from_hex(cls, keys: list[str], threshold: int = 1) -> Keyring:
        return cls(tuple(PublicKey.from_hex(k) for k in keys), threshold)

    def get(self, keyid: str) -> PublicKey | None:
        return self._by_id.get(keyid)

    def met_by(self, keyids: Iterable[str]) -> bool:
        """Whether signatures by `keyids` (each checked when it was made) reach the threshold."""
        return len(set(keyids) & self._by_id.keys()) >= self.threshold
