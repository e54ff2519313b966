"""Every parser and decoder in `shared` against hostile input: only the project's own errors
leave them, and what they return keeps the contract's bounds."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.builders import build_deployment, build_release, package_model
from shared.canonical import canonical_json
from shared.codec import compress, decompress, delta_decode, delta_encode
from shared.documents import Deployment, Release, load_json
from shared.envelope import verify_envelope
from shared.errors import LiteFleetError, Rejected
from shared.jsonload import json_depth
from shared.keys import Keyring, SigningKey
from shared.messages import Message, decode_message, encode_message
from shared.topics import parse_topic
from shared.verify import verify_deployment
from tests.fuzz.conftest import FUZZ
from tests.fuzz.strategies import (
    SCHEMAS,
    encode,
    json_values,
    message_body,
    mutated,
    sane_json,
    text,
    within_bounds,
)
from tests.shared.test_verify_update import IO

KEY = SigningKey.generate()
KEYRING = Keyring((KEY.public,))
NOW = datetime(2026, 3, 1, tzinfo=UTC)
MODEL = b"TFL3" + bytes(range(256)) * 8
BASE = b"base" * 300
_PACKAGED = package_model(MODEL, [BASE], level=3)
RELEASE = build_release(
    name="m",
    version=2,
    profile="x86-gateway",
    target=_PACKAGED.target,
    artifact=_PACKAGED.artifact("http://a/full"),
    io=IO,
    keys=[KEY],
    now=NOW,
    deltas=_PACKAGED.delta_entries({}),
    lifetime=timedelta(days=10),
)
DEPLOYMENT = json.dumps(
    build_deployment(release=RELEASE, device_id="dev-1", rollout_id="r1", keys=[KEY], now=NOW)
).encode()

any_bytes = (
    st.binary(max_size=300)
    | st.text(alphabet='[]{}",:0123456789-+eE.\\ tfnrule', max_size=400).map(str.encode)
    | json_values.map(encode)
)


def _refused_or(call, *args, **kwargs):
    """Call a parser: its result, or None when it refused with one of the project's errors."""
    try:
        return call(*args, **kwargs)
    except LiteFleetError:
        return None


@FUZZ
@given(mutated(any_bytes))
def test_load_json_raises_only_its_own_errors(data: bytes) -> None:
    _refused_or(load_json, data, 64 * 1024)


@FUZZ
@given(sane_json)
def test_load_json_returns_what_the_bounds_allow_unchanged(value) -> None:
    data = json.dumps(value).encode()
    assert load_json(data) == json.loads(data)


@FUZZ
@given(sane_json)
def test_json_depth_counts_nesting_outside_strings(value) -> None:
    def depth(v) -> int:
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        return 0

    assert json_depth(json.dumps(value).encode()) == depth(value)


@FUZZ
@given(json_values)
def test_canonical_json_encodes_or_refuses(value) -> None:
    data = _refused_or(canonical_json, value)
    if data is not None:
        assert json.loads(data) == value


@pytest.mark.parametrize("cls", SCHEMAS, ids=lambda c: c.SCHEMA)
def test_decode_message_keeps_every_schema_in_bounds(cls) -> None:
    @FUZZ
    @given(mutated(message_body(cls).map(encode)), st.booleans())
    def check(payload: bytes, with_clock: bool) -> None:
        message = _refused_or(
            decode_message, payload, now=datetime.now(UTC).timestamp() if with_clock else None
        )
        if message is not None:
            within_bounds(message)

    check()


@pytest.mark.parametrize("cls", SCHEMAS, ids=lambda c: c.SCHEMA)
def test_decode_message_round_trips_what_it_accepts(cls) -> None:
    @FUZZ
    @given(message_body(cls).map(encode))
    def check(payload: bytes) -> None:
        message: Message | None = _refused_or(decode_message, payload)
        if message is not None:
            assert decode_message(encode_message(message)) == message
            # the same document `dataclasses.asdict` gives (encode_message walks the fields)
            as_dict = {"schema": message.SCHEMA, **dataclasses.asdict(message)}
            assert json.loads(encode_message(message)) == json.loads(json.dumps(as_dict))

    check()


def _replace_somewhere(document, path: list, value):
    """`document` with the value at `path` (keys or indexes) replaced."""
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


def _paths(node, prefix=()):
    yield list(prefix)
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


RELEASE_PATHS = [p for p in _paths(RELEASE["signed"]) if p]


@FUZZ
@given(st.sampled_from(RELEASE_PATHS), json_values)
def test_release_and_deployment_parsers_refuse_or_keep_bounds(path, value) -> None:
    signed = _replace_somewhere(json.loads(json.dumps(RELEASE["signed"])), path, value)
    release = _refused_or(Release.parse_signed, signed)
    if release is not None:
        within_bounds(release)
        canonical_json(release.to_signed())
    deployment = json.loads(DEPLOYMENT)["signed"]
    deployment["release"] = {"signed": signed, "signatures": []}
    parsed = _refused_or(Deployment.parse_signed, deployment)
    assert parsed is None or parsed.release["signed"] is signed


@FUZZ
@given(mutated(st.just(DEPLOYMENT)))
def test_verify_deployment_accepts_the_original_or_refuses(data: bytes) -> None:
    update = _refused_or(
        verify_deployment,
        data,
        KEYRING,
        device_id="dev-1",
        profile="x86-gateway",
        model_name="m",
        installed_version=1,
        installed_sha256=None,
        now=NOW,
        max_model_bytes=1 << 20,
    )
    if update is not None:  # a mutation the signature still covers: only whitespace or order
        assert update.release.version == 2 and update.deployment.device_id == "dev-1"


@FUZZ
@given(json_values | st.fixed_dictionaries({"signed": json_values, "signatures": json_values}))
def test_verify_envelope_refuses_anything_unsigned(envelope) -> None:
    with pytest.raises(Rejected):
        verify_envelope(envelope, KEYRING)


@FUZZ
@given(text | st.text(alphabet="litefleet/v1devices+#-_ab", max_size=60))
def test_parse_topic_parses_or_refuses(name: str) -> None:
    parsed = _refused_or(parse_topic, name)
    if parsed is not None:
        assert name.endswith(f"/devices/{parsed.device_id}/{parsed.channel.value}")


FRAME = compress(MODEL, level=3)
DELTA = delta_encode(BASE, MODEL, level=3)


@FUZZ
@given(mutated(st.just(FRAME) | st.binary(max_size=200)), st.integers(0, 2 * len(MODEL)))
def test_decompress_refuses_or_stays_under_its_cap(frame: bytes, cap: int) -> None:
    data = _refused_or(decompress, frame, cap)
    assert data is None or len(data) <= cap


@FUZZ
@given(mutated(st.just(DELTA)), st.integers(0, 2 * len(MODEL)))
def test_delta_decode_refuses_or_stays_under_its_cap(delta: bytes, cap: int) -> None:
    data = _refused_or(delta_decode, BASE, delta, cap)
    assert data is None or len(data) <= cap
