"""An update's outcome as the agent logs it: words, not the dataclass's repr."""

from __future__ import annotations

from agent.update.outcome import UpdateOutcome


def test_an_outcome_is_one_readable_line() -> None:
    refused = UpdateOutcome(
        "rejected",
        "io_signature_mismatch",
        "input int8, expected float32",
        "digits-7-x",
        "digits",
        7,
        "ab" * 32,
    )
    assert refused.describe() == (
        "rejected digits@7 (abababababab), rollout digits-7-x: "
        "io_signature_mismatch: input int8, expected float32"
    )
    active = UpdateOutcome("probation", model="digits", version=7, sha256="cd" * 32, via="delta")
    assert active.describe() == "probation digits@7 (cdcdcdcdcdcd, delta)"
    assert UpdateOutcome("idle", no_op=True).describe() == "idle ?@0, nothing to do"
    assert "UpdateOutcome(" not in refused.describe()
