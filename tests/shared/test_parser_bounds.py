"""The shared parsers hold untrusted input to the contract's bounds, before and while parsing,
and only the project's own errors leave them (issue 13, items 1 and 7)."""

from __future__ import annotations

import json
import time

import pytest

from shared.canonical import canonical_json
from shared.documents import load_json
from shared.envelope import verify_envelope
from shared.errors import MalformedDocument, PayloadTooLarge
from shared.jsonload import INT64_MAX, MAX_JSON_DEPTH, json_depth
from shared.keys import Keyring, SigningKey
from shared.messages import (
    MAX_TS_AGE_S,
    MAX_TS_AHEAD_S,
    DeviceState,
    TelemetryRecord,
    UpdateStatus,
    decode_message,
)
from tests.shared.test_verify_update import KEY, deployment, release, verify

NOW = time.time()


def telemetry(**fields: object) -> bytes:
    body = {"schema": "litefleet.telemetry/1", "device_id": "dev-x", "seq": 1, "ts": NOW}
    body.update(fields)
    return json.dumps(body).encode()


def update(**fields: object) -> bytes:
    body = {
        "schema": "litefleet.update/1",
        "device_id": "dev-x",
        "seq": 1,
        "ts": NOW,
        "rollout_id": "r-1",
        "phase": "committed",
    }
    body.update(fields)
    return json.dumps(body).encode()


# -- load_json: bounded before the parser runs ------------------------------------------------


def test_deep_nesting_is_refused_before_parsing() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(MalformedDocument, match="nested deeper"):
        load_json(deep)
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_depth(at_limit) == MAX_JSON_DEPTH
    load_json(at_limit)  # the limit itself is fine
    with pytest.raises(MalformedDocument):
        load_json(b"[" + at_limit + b"]")
    # brackets inside strings are text, not nesting; quotes escaped inside them too
    text = json.dumps({"s": "[{" * 3000 + '\\"[' * 100}).encode()
    assert json_depth(text) == 1
    assert load_json(text)["s"].startswith("[{[{")


def test_a_5000_digit_integer_is_refused_but_digits_in_strings_are_fine() -> None:
    with pytest.raises(MalformedDocument, match="digits"):
        load_json(b'{"seq": ' + b"9" * 5000 + b"}")
    with pytest.raises(MalformedDocument, match="digits"):
        load_json(b"[-" + b"1" * 40 + b"]")
    assert load_json(b'{"sha": "' + b"1" * 5000 + b'", "n": 2}') == {"sha": "1" * 5000, "n": 2}
    assert load_json(str(2**70).encode()) == 2**70  # 22 digits: parsed; range is the schema's


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_constants_are_refused(constant: bytes) -> None:
    with pytest.raises(MalformedDocument):
        load_json(b'{"fps": ' + constant + b"}")


def test_size_is_checked_first() -> None:
    with pytest.raises(PayloadTooLarge):
        load_json(b"[" * 5000, max_bytes=4096)


# -- canonical JSON and envelopes --------------------------------------------------------------


def test_a_lone_surrogate_is_malformed_not_a_unicode_error() -> None:
    with pytest.raises(MalformedDocument):
        canonical_json({"name": "\ud800"})
    envelope = load_json(b'{"signed": {"name": "\\ud800"}, "signatures": []}')
    with pytest.raises(MalformedDocument):
        verify_envelope(envelope, Keyring((SigningKey.generate().public,)))


# -- messages: every payload class of the issue ----------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"schema":"litefleet.telemetry/1","device_id":"dev-x","seq":1,"ts":1e400}', "$.ts"),
        (telemetry(seq=1180591620717411303424), "$.seq"),
        (telemetry(seq=2**63), "$.seq"),
        (telemetry(seq=-1), "$.seq"),
        (telemetry(model={"name": "m", "version": 2**63, "sha256": "ab" * 32}), "$.model.version"),
        (telemetry(frames=-5), "$.frames"),
        (telemetry(fps=-1.0), "$.fps"),
        (telemetry(latency_p95_ms=1e300), "$.latency_p95_ms"),
        (telemetry(temperature_c=-500.0), "$.temperature_c"),
        (telemetry(source_status="up\u0000"), "$.source_status"),
        (telemetry(source_status="x" * 300), "$.source_status"),
        (telemetry(outputs={"top": list(range(300))}), "$.outputs"),
        (telemetry(outputs={"x": 2**64}), "$.outputs"),
        (telemetry(outputs={"x": "\ud800"}), "$.outputs"),
        (telemetry(device_id="dev x"), "$.device_id"),
        (update(phase="com\u0000mitted"), "$.phase"),
        (update(reason="\u001b[31m"), "$.reason"),
        (update(detail="y" * 5000), "$.detail"),
        (update(version=2**63), "$.version"),
        (update(bytes_total=-1), "$.bytes_total"),
    ],
)
def test_out_of_bounds_fields_are_malformed(payload: bytes, field: str) -> None:
    with pytest.raises(MalformedDocument) as info:
        decode_message(payload)
    assert info.value.field == field


def test_an_integer_too_large_for_a_float_is_malformed_not_an_overflow_error() -> None:
    for digits in (400, 5000):
        with pytest.raises(MalformedDocument):
            decode_message(telemetry().replace(f'"ts": {NOW}'.encode(), b'"ts": 1' + b"0" * digits))


def test_nan_and_infinity_in_messages_are_malformed() -> None:
    for raw in (b"NaN", b"Infinity", b"-1e999"):
        with pytest.raises(MalformedDocument):
            decode_message(
                b'{"schema":"litefleet.state/1","device_id":"d","online":true,'
                b'"ts":1,"fps":' + raw + b"}"
            )


def state(**fields: object) -> bytes:
    body = {"schema": "litefleet.state/1", "device_id": "dev-x", "online": True, "ts": NOW}
    body.update(fields)
    return json.dumps(body).encode()


def test_a_state_carries_its_root_version_and_an_older_agents_state_reads_as_0() -> None:
    reported = decode_message(state(root_version=3))
    assert isinstance(reported, DeviceState) and reported.root_version == 3
    older = decode_message(state())  # an agent from before the field: still a state
    assert isinstance(older, DeviceState) and older.root_version == 0
    at_limit = decode_message(state(root_version=INT64_MAX))
    assert isinstance(at_limit, DeviceState) and at_limit.root_version == INT64_MAX
    for bad in (-1, 2**63, 1.5, "3", True, None, [3]):
        with pytest.raises(MalformedDocument) as info:
            decode_message(state(root_version=bad))
        assert info.value.field == "$.root_version", bad


def test_the_bounds_themselves_are_accepted() -> None:
    record = decode_message(
        telemetry(
            seq=INT64_MAX, frames=0, temperature_c=-40.0, outputs={"n": -(2**63), "top": [[1, 0.5]]}
        )
    )
    assert isinstance(record, TelemetryRecord) and record.seq == INT64_MAX
    status = decode_message(update(detail="line one\nline two\ttab"))
    assert isinstance(status, UpdateStatus) and "\n" in status.detail


def test_ts_is_held_to_the_receivers_clock_when_given() -> None:
    assert decode_message(telemetry(ts=NOW - MAX_TS_AGE_S + 60), now=NOW).seq == 1
    assert decode_message(telemetry(ts=NOW + MAX_TS_AHEAD_S - 60), now=NOW).seq == 1
    for ts in (1, NOW - MAX_TS_AGE_S - 60, NOW + MAX_TS_AHEAD_S + 60):
        with pytest.raises(MalformedDocument) as info:
            decode_message(telemetry(ts=ts), now=NOW)
        assert info.value.field == "$.ts"
    assert decode_message(telemetry(ts=1)).ts == 1.0  # without a clock: the absolute range only


# -- signed documents: int64 ranges ------------------------------------------------------------


def test_a_validly_signed_release_with_version_2_to_the_70_is_malformed() -> None:
    with pytest.raises(MalformedDocument) as info:
        verify(deployment(release(version=2**70)))
    assert info.value.field == "release.signed.version"


def test_signed_sizes_and_metrics_outside_int64_are_malformed() -> None:
    from shared.builders import build_release, package_model
    from shared.documents import Provenance, Target
    from tests.shared.test_verify_update import IO, MODEL
    from tests.shared.test_verify_update import NOW as SIGNED_NOW

    packaged = package_model(MODEL, level=3)
    for target, provenance, field in (
        (Target(packaged.target.sha256, 2**64), None, "release.signed.target.size"),
        (
            packaged.target,
            Provenance(metrics={"bytes": 2**64}),
            "release.signed.provenance.metrics.bytes",
        ),
    ):
        rel = build_release(
            name="m",
            version=2,
            profile="x86-gateway",
            target=target,
            artifact=packaged.artifact("file:///a"),
            io=IO,
            keys=[KEY],
            now=SIGNED_NOW,
            provenance=provenance,
        )
        with pytest.raises(MalformedDocument) as info:
            verify(deployment(rel))
        assert info.value.field == field
