"""The exception tree of the wire contract.

    LiteFleetError
    ├── Rejected              the input is bad; retrying the same bytes will not help
    │   ├── MalformedDocument       not JSON, wrong type, missing or unknown field (names the field)
    │   ├── PayloadTooLarge         more bytes than the cap allows
    │   ├── UnknownSchema           a message kind or version this side does not speak
    │   ├── InvalidDeviceId         a device id outside [A-Za-z0-9_-]{1,64}
    │   ├── BadSignature            too few valid signatures from trusted keys
    │   ├── Expired                 a document past its `expires` time
    │   ├── VersionNotNewer         rollback or replay: version not greater than installed
    │   ├── WrongDevice             a deployment bound to another device
    │   ├── WrongProfile            a release built for another device profile
    │   ├── HashMismatch            bytes whose sha256 differs from the signed one
    │   ├── SizeExceeded            more bytes than the signed size (download or decompression)
    │   ├── DeltaBaseMismatch       a delta applied to a base it was not made from
    │   ├── CorruptArtifact         bytes that do not decode
    │   ├── InvalidModel            a file the runtime will not load or invoke
    │   ├── IOSignatureMismatch     a model whose inputs/outputs do not fit the application
    │   └── ProbationFailed         a model that loaded but misbehaved on probation
    │       └── ProbationCrashed        the agent died twice while this model was on probation
    └── Unavailable           the transport failed; retry later
        ├── FetchFailed             a download that did not complete
        │   └── SlowRetrieval           a download past its deadline (size / minimum rate)
        ├── DiskFull                no space left for a download or a model (ENOSPC, EDQUOT)
        └── Superseded              a newer deployment took over before this one finished

Every `Rejected` subclass carries a stable `reason` string: it travels on the wire in update
status messages, so operators can group failures by it.
"""

from __future__ import annotations

from shared.phases import Reason

__all__ = [
    "BadSignature",
    "CorruptArtifact",
    "DeltaBaseMismatch",
    "DiskFull",
    "Expired",
    "FetchFailed",
    "HashMismatch",
    "IOSignatureMismatch",
    "InvalidDeviceId",
    "InvalidModel",
    "LiteFleetError",
    "MalformedDocument",
    "PayloadTooLarge",
    "ProbationCrashed",
    "ProbationFailed",
    "Rejected",
    "SizeExceeded",
    "SlowRetrieval",
    "Superseded",
    "Unavailable",
    "UnknownSchema",
    "VersionNotNewer",
    "WrongDevice",
    "WrongProfile",
    "reason_of",
]


class LiteFleetError(Exception):
    """Root of every error the wire contract raises."""

    reason: str = Reason.ERROR


class Rejected(LiteFleetError):
    """The input is bad. `reason` is the stable code reported on the wire."""

    reason: str = Reason.REJECTED


class MalformedDocument(Rejected):
    reason = Reason.MALFORMED

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class PayloadTooLarge(Rejected):
    reason = Reason.PAYLOAD_TOO_LARGE


class UnknownSchema(Rejected):
    reason = Reason.UNKNOWN_SCHEMA


class InvalidDeviceId(Rejected):
    reason = Reason.INVALID_DEVICE_ID


class BadSignature(Rejected):
    reason = Reason.BAD_SIGNATURE


class Expired(Rejected):
    reason = Reason.EXPIRED


class VersionNotNewer(Rejected):
    reason = Reason.VERSION_NOT_NEWER


class WrongDevice(Rejected):
    reason = Reason.WRONG_DEVICE


class WrongProfile(Rejected):
    reason = Reason.WRONG_PROFILE


class HashMismatch(Rejected):
    reason = Reason.HASH_MISMATCH


class SizeExceeded(Rejected):
    reason = Reason.SIZE_EXCEEDED


class DeltaBaseMismatch(Rejected):
    reason = Reason.DELTA_BASE_MISMATCH


class CorruptArtifact(Rejected):
    reason = Reason.CORRUPT_ARTIFACT


class InvalidModel(Rejected):
    reason = Reason.INVALID_MODEL


class IOSignatureMismatch(Rejected):
    reason = Reason.IO_SIGNATURE_MISMATCH


class ProbationFailed(Rejected):
    reason = Reason.PROBATION_FAILED


class ProbationCrashed(ProbationFailed):
    reason = Reason.CRASHED


class Unavailable(LiteFleetError):
    """The transport failed (network, broker, store). Retry later."""

    reason: str = Reason.UNAVAILABLE


class FetchFailed(Unavailable):
    reason = Reason.FETCH_FAILED


class SlowRetrieval(FetchFailed):
    reason = Reason.SLOW_RETRIEVAL


class DiskFull(Unavailable):
    reason = Reason.DISK_FULL


class Superseded(Unavailable):
    reason = Reason.SUPERSEDED


def reason_of(error: BaseException) -> str:
    """The wire reason code of an error; `internal_error` for anything outside the tree."""
    reason = getattr(error, "reason", None)
    if isinstance(error, LiteFleetError) and isinstance(reason, str):
        return reason
    return Reason.INTERNAL_ERROR
