"""Hostile `desired` payloads: each one is a reported `Rejected`, and the current model serves.

A real updater on a real state dir (SQLite journal, outbox, model store). Signed documents with
values the device cannot store (a version of 2**70) and random or mutated bytes: the refusal is
published on the update channel with a reason code and, when the document names one, its
rollout id; nothing but the project's own errors leaves the parse/verify step.

The property tests use hypothesis' settings profile (`HYPOTHESIS_PROFILE`; `make fuzz` picks a
larger one), with no example count of their own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.update.admission import admit_deployment, claimed_rollout_id
from shared.errors import Rejected
from shared.keys import SigningKey
from shared.messages import UpdatePhase

from .conftest import DIGITS, DIGITS_FT, PROFILE, Bench, sha, write_config


def test_a_signed_release_with_a_version_past_int64_is_rejected_and_reported(
    tmp_path, keys, device_factory
):
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    release = bench.release(
        DIGITS_FT.read_bytes(), 1, mutate=lambda signed: signed.update(version=2**70)
    )
    outcome = device.updater.handle_deployment(bench.deployment(release, rollout="r-huge"))
    assert (outcome.phase, outcome.reason) == (UpdatePhase.REJECTED, "malformed"), outcome
    status = device.last_status()
    assert (status.phase, status.reason, status.rollout_id) == ("rejected", "malformed", "r-huge")
    assert "64-bit" in status.detail
    assert device.updater.active().sha256 == sha(DIGITS.read_bytes())
    # and the device goes on taking good deployments
    good = device.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 2))
    )
    assert good.phase == UpdatePhase.COMMITTED, good


@pytest.mark.parametrize("case", ["bad_signature", "wrong_device", "expired"])
def test_a_refusal_before_download_carries_the_rollout_id_it_claims(
    case, tmp_path, keys, device_factory
):
    from datetime import timedelta

    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    release = bench.release(DIGITS_FT.read_bytes(), 1)
    if case == "bad_signature":
        data = bench.deployment(release, keys=[SigningKey.generate()], rollout="r-2")
    elif case == "wrong_device":
        data = bench.deployment(release, device="cam-99", rollout="r-2")
    else:
        data = bench.deployment(release, rollout="r-2", lifetime=timedelta(seconds=-1))
    outcome = device.updater.handle_deployment(data)
    assert (outcome.phase, outcome.reason, outcome.rollout_id) == ("rejected", case, "r-2")
    status = device.last_status()
    assert (status.reason, status.rollout_id) == (case, "r-2") and status.detail


def test_the_claimed_rollout_id_is_read_only_when_it_looks_like_one() -> None:
    def doc(rid: Any) -> bytes:
        return json.dumps({"signed": {"rollout_id": rid}, "signatures": []}).encode()

    assert claimed_rollout_id(doc("digits-2-20260101-ab12")) == "digits-2-20260101-ab12"
    for bad in ("", "a/b", "x" * 65, 7, None, "r\u0000"):
        assert claimed_rollout_id(doc(bad)) == ""
    for garbage in (b"", b"\xff", b"[" * 100_000, b"1" * 10_000, b'{"signed": 1}'):
        assert claimed_rollout_id(garbage) == ""


# -- properties --------------------------------------------------------------------------------


@pytest.fixture
def hostile(tmp_path, keys, device_factory):
    """A device with the initial model and one valid signed deployment to mutate."""
    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    valid = bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1), rollout="r-9")
    return device, valid


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


def _check_refused(device: Any, data: bytes, before: int, initial: str) -> None:
    outcome = device.updater.handle_deployment(data)  # raises nothing but a test failure
    statuses = device.statuses()
    assert len(statuses) > before, "every refusal is reported"
    if outcome.phase == UpdatePhase.REJECTED:
        assert statuses[-1].phase == "rejected" and statuses[-1].reason == outcome.reason
    if not outcome.active:
        assert device.updater.active().sha256 == initial  # the current model still serves


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_mutated_signed_deployments_are_refused_and_reported(hostile, edits) -> None:
    device, valid = hostile
    data = _mutate(valid, edits)
    if data == valid:
        return
    _check_refused(device, data, len(device.statuses()), sha(DIGITS.read_bytes()))


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=30,
        ).map(lambda v: json.dumps({"signed": v, "signatures": []}).encode()),
        st.sampled_from(
            [
                b"[" * 50_000,
                b'{"signed": {"version": ' + b"9" * 5000 + b"}}",
                b'{"signed": "\\ud800", "signatures": []}',
                b"1e400",
            ]
        ),
    )
)
def test_random_desired_payloads_only_raise_project_errors_and_are_reported(hostile, data):
    device, _ = hostile
    try:
        admit_deployment(
            data,
            device.updater._keyring,
            device_id="cam-01",
            profile=PROFILE,
            model_name="digits",
            installed_version=0,
            installed_sha256=None,
            now=Bench(device.config.state_dir, []).now,
            max_model_bytes=None,
            expected_io=None,
        )
    except Rejected:
        pass
    _check_refused(device, data, len(device.statuses()), sha(DIGITS.read_bytes()))


def test_a_refusal_that_quotes_a_lone_surrogate_is_journaled_and_reported(
    tmp_path, keys, device_factory
):
    """Error sentences may quote hostile text; SQLite and the wire get it escaped."""
    from shared.errors import MalformedDocument

    device = device_factory(write_config(tmp_path, keys))
    device.updater.recover()
    outcome = device.updater.refuse(MalformedDocument("unknown field", "signed.\udc80"))
    assert outcome.reason == "malformed"
    status = device.last_status()
    assert (status.phase, status.reason) == ("rejected", "malformed")
    assert "\\udc80" in status.detail
