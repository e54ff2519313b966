"""The pure verification core: one typed rejection per attack, before anything is fetched."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.builders import build_deployment, build_release, package_model
from shared.documents import IOSignature, TensorSpec
from shared.errors import (
    BadSignature,
    Expired,
    IOSignatureMismatch,
    MalformedDocument,
    PayloadTooLarge,
    SizeExceeded,
    VersionNotNewer,
    WrongDevice,
    WrongProfile,
)
from shared.keys import Keyring, SigningKey
from shared.verify import describe_io, verify_deployment

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IO = IOSignature((TensorSpec("x", (1, 4), "float32"),), (TensorSpec("y", (1, 2), "float32"),))
OTHER_IO = IOSignature((TensorSpec("x", (1, 8), "float32"),), (TensorSpec("y", (1, 2), "float32"),))
MODEL = b"TFL3" + bytes(range(256)) * 40
KEY = SigningKey.generate()


def release(
    version: int = 2,
    *,
    keys=(KEY,),
    profile="x86-gateway",
    name="m",
    io=IO,
    now=NOW,
    lifetime=timedelta(days=10),
    model=MODEL,
):
    packaged = package_model(model, [b"base" * 100], level=3)
    return build_release(
        name=name,
        version=version,
        profile=profile,
        target=packaged.target,
        artifact=packaged.artifact("file:///a"),
        io=io,
        keys=list(keys),
        now=now,
        deltas=packaged.delta_entries({}),
        lifetime=lifetime,
    )


def deployment(rel=None, *, keys=(KEY,), device="dev-1", now=NOW, lifetime=timedelta(days=1)):
    env = build_deployment(
        release=rel or release(),
        device_id=device,
        rollout_id="r1",
        keys=list(keys),
        now=now,
        lifetime=lifetime,
    )
    return json.dumps(env).encode()


def verify(data, *, keyring=None, installed_version=1, installed_sha=None, now=NOW, **kw):
    return verify_deployment(
        data,
        keyring or Keyring((KEY.public,)),
        device_id="dev-1",
        profile="x86-gateway",
        model_name="m",
        installed_version=installed_version,
        installed_sha256=installed_sha,
        now=now,
        **kw,
    )


def test_a_good_deployment_verifies():
    update = verify(deployment(), max_model_bytes=1 << 20, expected_io=IO)
    assert update.release.version == 2 and not update.is_current
    assert update.release.target.sha256 == hashlib.sha256(MODEL).hexdigest()
    assert update.deployment.device_id == "dev-1"


def test_same_version_and_target_is_a_verified_no_op():
    sha = hashlib.sha256(MODEL).hexdigest()
    assert verify(deployment(), installed_version=2, installed_sha=sha).is_current


@pytest.mark.parametrize(
    ("data", "kw", "error"),
    [
        (lambda: deployment(keys=[SigningKey.generate()]), {}, BadSignature),
        (lambda: deployment(release(keys=[SigningKey.generate()])), {}, BadSignature),
        (lambda: deployment(device="dev-2"), {}, WrongDevice),
        (lambda: deployment(release(profile="rpi4")), {}, WrongProfile),
        (lambda: deployment(release(name="other")), {}, WrongProfile),
        (lambda: deployment(release(now=NOW - timedelta(days=20))), {}, Expired),
        (lambda: deployment(now=NOW - timedelta(days=2)), {}, Expired),
        (lambda: deployment(release(version=1)), {}, VersionNotNewer),
        (lambda: deployment(release(version=0)), {}, VersionNotNewer),
        (lambda: deployment(), {"max_model_bytes": 1000}, SizeExceeded),
        (lambda: deployment(), {"expected_io": OTHER_IO}, IOSignatureMismatch),
        (lambda: b"x" * 300_000, {}, PayloadTooLarge),
        (lambda: b"[1, 2]", {}, MalformedDocument),
    ],
)
def test_each_attack_has_its_typed_rejection(data, kw, error):
    with pytest.raises(error):
        verify(data(), **kw)


def test_same_version_with_other_bytes_is_not_newer():
    with pytest.raises(VersionNotNewer):
        verify(deployment(), installed_version=2, installed_sha="0" * 64)


def test_threshold_needs_distinct_trusted_keys():
    k2 = SigningKey.generate()
    ring = Keyring((KEY.public, k2.public), threshold=2)
    with pytest.raises(BadSignature):
        verify(deployment(release(keys=[KEY, KEY]), keys=[KEY, KEY]), keyring=ring)
    assert verify(deployment(release(keys=[KEY, k2]), keys=[KEY, k2]), keyring=ring)


def test_extraneous_fields_are_refused_even_when_signed():
    from shared.envelope import sign_envelope

    rel = release()
    rel["signed"]["dependencies"] = ["http://elsewhere/x"]
    with pytest.raises(MalformedDocument, match="dependencies"):
        verify(deployment(sign_envelope(rel["signed"], [KEY])))


def test_describe_io_reads_well():
    assert describe_io(IO) == "in float32[1,4] -> out float32[1,2]"
