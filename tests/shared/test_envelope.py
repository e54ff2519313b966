import base64
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.canonical import canonical_json
from shared.envelope import sign_envelope, verify_envelope
from shared.errors import BadSignature, MalformedDocument
from shared.keys import Keyring, SigningKey

KEY_A = SigningKey.generate()
KEY_B = SigningKey.generate()
KEY_C = SigningKey.generate()

documents = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.integers(), st.text(max_size=16), st.booleans()),
    min_size=1,
    max_size=6,
)


@given(documents)
def test_sign_then_verify(doc):
    envelope = sign_envelope(doc, [KEY_A])
    assert verify_envelope(envelope, Keyring((KEY_A.public,))) == doc


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(documents, st.data())
def test_any_single_byte_change_to_the_signed_document_fails(doc, data):
    envelope = sign_envelope(doc, [KEY_A])
    raw = bytearray(canonical_json(envelope["signed"]))
    index = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    raw[index] ^= flip
    try:
        tampered = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return  # no longer a document at all: rejected before signatures matter
    if tampered == doc:
        return  # the flip produced an equivalent encoding of the same document
    with pytest.raises((BadSignature, MalformedDocument)):
        verify_envelope(
            {"signed": tampered, "signatures": envelope["signatures"]}, Keyring((KEY_A.public,))
        )


@settings(max_examples=60)
@given(documents, st.data())
def test_any_single_byte_change_to_the_signature_fails(doc, data):
    envelope = sign_envelope(doc, [KEY_A])
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    index = data.draw(st.integers(0, len(sig) - 1))
    sig[index] ^= data.draw(st.integers(1, 255))
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(BadSignature):
        verify_envelope(envelope, Keyring((KEY_A.public,)))


def test_threshold_two_needs_two_distinct_keys():
    ring = Keyring((KEY_A.public, KEY_B.public), threshold=2)
    doc = {"x": 1}
    with pytest.raises(BadSignature):
        verify_envelope(sign_envelope(doc, [KEY_A]), ring)
    with pytest.raises(BadSignature):
        verify_envelope(sign_envelope(doc, [KEY_A, KEY_A]), ring)
    assert verify_envelope(sign_envelope(doc, [KEY_A, KEY_B]), ring) == doc


def test_unknown_keys_are_ignored_and_do_not_count():
    ring = Keyring((KEY_A.public,))
    doc = {"x": 1}
    with pytest.raises(BadSignature):
        verify_envelope(sign_envelope(doc, [KEY_C]), ring)
    assert verify_envelope(sign_envelope(doc, [KEY_C, KEY_A]), ring) == doc


def test_signature_claiming_a_trusted_keyid_but_made_by_another_key_fails():
    envelope = sign_envelope({"x": 1}, [KEY_C])
    forged = copy.deepcopy(envelope)
    forged["signatures"][0]["keyid"] = KEY_A.keyid
    with pytest.raises(BadSignature):
        verify_envelope(forged, Keyring((KEY_A.public,)))


@pytest.mark.parametrize(
    "envelope",
    [
        [],
        {"signed": {}},
        {"signed": [], "signatures": []},
        {"signed": {}, "signatures": {}},
        {"signed": {}, "signatures": [], "extra": 1},
        {"signed": {}, "signatures": ["x"]},
    ],
)
def test_malformed_envelopes_are_rejected(envelope):
    with pytest.raises(MalformedDocument):
        verify_envelope(envelope, Keyring((KEY_A.public,)))


def test_keyring_refuses_impossible_threshold():
    with pytest.raises(ValueError):
        Keyring((KEY_A.public, KEY_A.public), threshold=2)
