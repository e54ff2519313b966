"""The dashboard counts a device as updating in every phase of an update under way, including
`validating` (the phase the model is smoke-tested in)."""

from __future__ import annotations

from cloud.store.dashboard import BUSY_PHASES
from shared.phases import UpdatePhase


def test_every_non_terminal_phase_is_busy():
    assert "validating" in BUSY_PHASES
    assert set(BUSY_PHASES) == {p.value for p in UpdatePhase} - {
        "idle",
        "committed",
        "rolled_back",
        "rejected",
    }
