"""The update phases as data: the transition table, and phases as strings on the wire."""

from __future__ import annotations

import itertools
import json

import pytest

from shared.errors import InvalidModel, Superseded
from shared.messages import UpdateStatus, decode_message, encode_message
from shared.phases import TRANSITIONS, Reason, UpdatePhase, allowed, check_transition


def test_every_phase_has_a_row_and_terminal_phases_go_nowhere():
    assert set(TRANSITIONS) == {None, *UpdatePhase}
    for phase in UpdatePhase.TERMINAL:
        assert TRANSITIONS[phase] == frozenset()
    for phase in set(UpdatePhase) - set(UpdatePhase.TERMINAL):
        assert TRANSITIONS[phase], phase  # every half-done phase can be settled


def test_every_phase_is_reachable_from_a_new_attempt():
    seen: set[UpdatePhase] = set()
    todo = list(TRANSITIONS[None])
    while todo:
        phase = todo.pop()
        if phase not in seen:
            seen.add(phase)
            todo.extend(TRANSITIONS[phase])
    assert seen == set(UpdatePhase)


def test_the_pipeline_path_is_allowed_and_shortcuts_are_not():
    path = [
        None,
        UpdatePhase.DOWNLOADING,
        UpdatePhase.VERIFYING,
        UpdatePhase.VALIDATING,
        UpdatePhase.STAGED,
        UpdatePhase.ACTIVATING,
        UpdatePhase.PROBATION,
        UpdatePhase.COMMITTED,
    ]
    for here, there in itertools.pairwise(path):
        assert there is not None
        check_transition(here, there)
    assert allowed(UpdatePhase.VALIDATING, UpdatePhase.REJECTED)  # what recovery does
    assert allowed(UpdatePhase.PROBATION, UpdatePhase.ROLLED_BACK)
    for here, there in [
        (UpdatePhase.DOWNLOADING, UpdatePhase.STAGED),  # never unvalidated
        (UpdatePhase.VALIDATING, UpdatePhase.ACTIVATING),
        (UpdatePhase.COMMITTED, UpdatePhase.PROBATION),
        (None, UpdatePhase.PROBATION),
        (UpdatePhase.PROBATION, UpdatePhase.IDLE),
    ]:
        assert not allowed(here, there)
        with pytest.raises(RuntimeError, match="may not go from"):
            check_transition(here, there)
    with pytest.raises(RuntimeError):  # a string read back from the journal is checked too
        check_transition("committed", UpdatePhase.STAGED)


def test_phases_and_reasons_are_their_strings_on_the_wire():
    assert UpdatePhase.VALIDATING == "validating" and f"{UpdatePhase.ROLLED_BACK}" == "rolled_back"
    assert InvalidModel.reason == Reason.INVALID_MODEL == "invalid_model"
    assert Superseded.reason == "superseded"
    status = UpdateStatus(
        device_id="cam-01",
        seq=1,
        ts=1.0,
        rollout_id="r1",
        phase=UpdatePhase.VALIDATING,
        reason=Reason.INVALID_MODEL,
    )
    body = json.loads(encode_message(status))
    assert (body["phase"], body["reason"]) == ("validating", "invalid_model")
    decoded = decode_message(encode_message(status))
    assert isinstance(decoded, UpdateStatus) and decoded.phase == UpdatePhase.VALIDATING


def test_a_phase_this_side_does_not_know_is_still_a_valid_status():
    """A newer agent may report a phase an older cloud has never heard of."""
    raw = json.dumps(
        {
            "schema": UpdateStatus.SCHEMA,
            "device_id": "cam-01",
            "seq": 2,
            "ts": 1.0,
            "rollout_id": "r1",
            "phase": "some_future_phase",
        }
    ).encode()
    decoded = decode_message(raw)
    assert isinstance(decoded, UpdateStatus) and decoded.phase == "some_future_phase"
