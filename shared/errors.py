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

    reason = "error"


class Rejected(LiteFleetError):
    """The input is bad. `reason` is the stable code reported on the wire."""

    reason = "rejected"


class MalformedDocument(Rejected):
    reason = "malformed"

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class PayloadTooLarge(Rejected):
    reason = "payload_too_large"


class UnknownSchema(Rejected):
    reason = "unknown_schema"


class InvalidDeviceId(Rejected):
    reason = "invalid_device_id"


class BadSignature(Rejected):
    reason = "bad_signature"


class Expired(Rejected):
    reason = "expired"


class VersionNotNewer(Rejected):
    reason = "version_not_newer"


class WrongDevice(Rejected):
    reason = "wrong_device"


class WrongProfile(Rejected):
    reason = "wrong_profile"


class HashMismatch(Rejected):
    reason = "hash_mismatch"


class SizeExceeded(Rejected):
    reason = "size_exceeded"


class DeltaBaseMismatch(Rejected):
    reason = "delta_base_mismatch"


class CorruptArtifact(Rejected):
    reason = "corrupt_artifact"


class InvalidModel(Rejected):
    reason = "invalid_model"


class IOSignatureMismatch(Rejected):
    reason = "io_signature_mismatch"


class ProbationFailed(Rejected):
    reason = "probation_failed"


class ProbationCrashed(ProbationFailed):
    reason = "crashed"


class Unavailable(LiteFleetError):
    """The transport failed (network, broker, store). Retry later."""

    reason = "unavailable"


class FetchFailed(Unavailable):
    reason = "fetch_failed"


class SlowRetrieval(FetchFailed):
    reason = "slow_retrieval"


class DiskFull(Unavailable):
    reason = "disk_full"


class Superseded(Unavailable):
    reason = "superseded"


def reason_of(error: BaseException) -> str:
    """The wire reason code of an error; `internal_error` for anything outside the tree."""
    reason = getattr(error, "reason", None)
    if isinstance(error, LiteFleetError) and isinstance(reason, str):
        return reason
    return "internal_error"
