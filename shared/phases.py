"""The update journal's phases, the reason codes, and the transitions the agent may take.

    (new attempt) -> downloading | rejected
    downloading   -> verifying | validating | downloading | idle | rejected
    verifying     -> downloading | validating | idle | rejected
    validating    -> staged | idle | rejected
    staged        -> activating | idle | rejected
    activating    -> probation | committed | idle | rejected
    probation     -> probation (resumed) | committed | rolled_back
    idle, committed, rolled_back, rejected: terminal

Recovery after a crash takes the same table: a half-done attempt goes to `idle` (resumed by
the next delivery), `validating` to `rejected` and `probation` to `rolled_back`.

Both enums are `StrEnum`s: on the wire and in the journal a phase or a reason is its string
value, and a member compares equal to that string, so a peer that reads them as text keeps
working. A peer must accept a phase it does not know (a newer agent may report one).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

__all__ = ["TRANSITIONS", "Reason", "UpdatePhase", "allowed", "check_transition"]


class UpdatePhase(StrEnum):
    """The update journal's phases (ARCHITECTURE.md, device state)."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    VALIDATING = "validating"  # the model is loaded and smoke-tested before it may serve
    STAGED = "staged"
    ACTIVATING = "activating"
    PROBATION = "probation"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"

    ALL: ClassVar[tuple[UpdatePhase, ...]]
    TERMINAL: ClassVar[tuple[UpdatePhase, ...]]

    @property
    def terminal(self) -> bool:
        return self in UpdatePhase.TERMINAL


UpdatePhase.ALL = tuple(UpdatePhase)
UpdatePhase.TERMINAL = (
    UpdatePhase.IDLE,
    UpdatePhase.COMMITTED,
    UpdatePhase.ROLLED_BACK,
    UpdatePhase.REJECTED,
)


class Reason(StrEnum):
    """Why an update attempt (or any input) was refused or stopped: `LiteFleetError.reason`."""

    ERROR = "error"
    INTERNAL_ERROR = "internal_error"
    # Rejected: the input is bad
    REJECTED = "rejected"
    MALFORMED = "malformed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_SCHEMA = "unknown_schema"
    INVALID_DEVICE_ID = "invalid_device_id"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    VERSION_NOT_NEWER = "version_not_newer"
    WRONG_DEVICE = "wrong_device"
    WRONG_PROFILE = "wrong_profile"
    HASH_MISMATCH = "hash_mismatch"
    SIZE_EXCEEDED = "size_exceeded"
    DELTA_BASE_MISMATCH = "delta_base_mismatch"
    CORRUPT_ARTIFACT = "corrupt_artifact"
    INVALID_MODEL = "invalid_model"
    IO_SIGNATURE_MISMATCH = "io_signature_mismatch"
    PROBATION_FAILED = "probation_failed"
    CRASHED = "crashed"
    MISSING_ROOT = "missing_root"
    REPLAYED = "replayed"  # a signed command seen before
    # the installed (or previous) release is not signed by a threshold of the current root's
    # release keys: its version stops holding releases back; it serves until one installs
    UNTRUSTED_INSTALLED = "untrusted_installed"
    # Unavailable: the transport failed, retry later
    UNAVAILABLE = "unavailable"
    FETCH_FAILED = "fetch_failed"
    SLOW_RETRIEVAL = "slow_retrieval"
    DISK_FULL = "disk_full"
    SUPERSEDED = "superseded"


# Reasons that condemn the model itself: the same bytes at that version are never tried again.
MODEL_REASONS = (
    Reason.INVALID_MODEL,
    Reason.IO_SIGNATURE_MISMATCH,
    Reason.PROBATION_FAILED,
    Reason.CRASHED,
)

_P = UpdatePhase
# Where each phase may go next; `None` is a new attempt (a journal row about to be written).
TRANSITIONS: dict[UpdatePhase | None, frozenset[UpdatePhase]] = {
    None: frozenset({_P.DOWNLOADING, _P.REJECTED}),
    _P.DOWNLOADING: frozenset({_P.DOWNLOADING, _P.VERIFYING, _P.VALIDATING, _P.IDLE, _P.REJECTED}),
    _P.VERIFYING: frozenset({_P.DOWNLOADING, _P.VALIDATING, _P.IDLE, _P.REJECTED}),
    _P.VALIDATING: frozenset({_P.STAGED, _P.IDLE, _P.REJECTED}),
    _P.STAGED: frozenset({_P.ACTIVATING, _P.IDLE, _P.REJECTED}),
    _P.ACTIVATING: frozenset({_P.PROBATION, _P.COMMITTED, _P.IDLE, _P.REJECTED}),
    _P.PROBATION: frozenset({_P.PROBATION, _P.COMMITTED, _P.ROLLED_BACK}),
    _P.IDLE: frozenset(),
    _P.COMMITTED: frozenset(),
    _P.ROLLED_BACK: frozenset(),
    _P.REJECTED: frozenset(),
}


def allowed(current: UpdatePhase | None, new: UpdatePhase) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: str | None, new: UpdatePhase) -> None:
    """Raise `RuntimeError` (a programming error, not bad input) for a move the table forbids."""
    here = UpdatePhase(current) if current is not None else None
    if not allowed(here, new):
        raise RuntimeError(f"the update journal may not go from {here or 'a new attempt'} to {new}")
