"""Admitting a deployment: untrusted bytes in, a verified update or one typed `Rejected` out.

`shared.verify.verify_deployment` is the verification core; this adds what the device needs
around it:

- only the project's error types leave: anything else a hostile document provokes in parsing
  (a recursion, an overflow, a bad code point) becomes `MalformedDocument`, so a refusal is
  always reported with a reason and never ends a worker;
- integers the device stores (version, sizes) must fit SQLite's int64;
- `claimed_rollout_id` reads the rollout id from a document that failed verification, so the
  refusal is reported against its rollout. It is untrusted: the cloud applies it only to the
  reporting device's row in that rollout.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from shared.documents import DEFAULT_MAX_DOCUMENT_BYTES, IOSignature, Release, load_json
from shared.errors import MalformedDocument, Rejected
from shared.keys import Keyring
from shared.verify import VerifiedUpdate, verify_deployment

__all__ = ["INT64_MAX", "admit_deployment", "claimed_rollout_id"]

INT64_MAX = 2**63 - 1
_ROLLOUT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # the documents' name pattern


def admit_deployment(
    data: bytes,
    keyring: Keyring,
    *,
    device_id: str,
    profile: str,
    model_name: str,
    installed_version: int,
    installed_sha256: str | None,
    now: datetime,
    max_model_bytes: int | None,
    expected_io: IOSignature | None,
) -> VerifiedUpdate:
    """`verify_deployment`, with every failure a `Rejected` and every integer storable."""
    try:
        verified = verify_deployment(
            data,
            keyring,
            device_id=device_id,
            profile=profile,
            model_name=model_name,
            installed_version=installed_version,
            installed_sha256=installed_sha256,
            now=now,
            max_model_bytes=max_model_bytes,
            expected_io=expected_io,
        )
    except Rejected:
        raise
    except Exception as e:  # a parser let a non-project error out: still a bad document
        raise MalformedDocument(f"unreadable deployment ({type(e).__name__})") from e
    _check_int64(verified.release)
    return verified


def _check_int64(release: Release) -> None:
    values = [
        ("version", release.version),
        ("target.size", release.target.size),
        ("artifact.size", release.artifact.size),
    ]
    values += [("deltas.size", d.size) for d in release.deltas]
    for name, value in values:
        if not 0 <= value <= INT64_MAX:
            raise MalformedDocument(
                f"{value} does not fit a 64-bit integer", f"release.signed.{name}"
            )


def claimed_rollout_id(data: bytes) -> str:
    """The rollout id a deployment claims, unverified; "" when it cannot be read."""
    try:
        envelope: Any = load_json(data, DEFAULT_MAX_DOCUMENT_BYTES)
        value = envelope["signed"]["rollout_id"]
    except Exception:  # any unreadable document simply names no rollout
        return ""
    return value if isinstance(value, str) and _ROLLOUT_ID.match(value) else ""
