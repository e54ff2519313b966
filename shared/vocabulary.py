"""The closed vocabularies of the wire contract, declared once: operator command names and the
routes a model can arrive by. `StrEnum`s: on the wire each is its string value, and a member
compares equal to that string. (Update phases and reason codes: `shared.phases`.)"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CommandName", "Via"]


class CommandName(StrEnum):
    """What a signed operator command (`litefleet.cmd/1`) asks a device to do."""

    REPORT_NOW = "report-now"  # publish telemetry and state at once
    ROLLBACK = "rollback"  # end a running probation as failed: the previous model serves
    RESTART_SOURCE = "restart-source"  # close and reopen the camera or sensor
    CAPTURE = "capture"  # keep sample frames for a while (upload them later)
    UPLOAD = "upload"  # send the kept samples now


class Via(StrEnum):
    """How an update's model reached the device (`UpdateStatus.via`)."""

    LOCAL = "local"  # already in the model store, or from a local artifact folder
    DELTA = "delta"  # a binary delta applied to the active model
    FULL = "full"  # the whole artifact downloaded
