import copy
import json

import pytest

from shared.canonical import canonical_json
from shared.documents import (
    Artifact,
    Delta,
    Deployment,
    IOSignature,
    ProbationPolicy,
    Provenance,
    Release,
    Target,
    TensorSpec,
    load_json,
)
from shared.errors import MalformedDocument, PayloadTooLarge

SHA = "ab" * 32


def make_release(**overrides) -> Release:
    fields = dict(
        name="digits",
        version=2,
        profile="x86-gateway",
        created="2026-11-01T00:00:00Z",
        expires="2027-11-01T00:00:00Z",
        target=Target(SHA, 1234),
        artifact=Artifact("http://x/a.zst", SHA, 999),
        deltas=(Delta("cd" * 32, "http://x/d", SHA, 50),),
        io=IOSignature(
            (TensorSpec("input", (1, 28, 28, 1), "uint8", "0.003921568859368563", 0),),
            (TensorSpec("probs", (1, 10), "float32"),),
        ),
        provenance=Provenance("ef" * 32, "dynamic_int8", {"accuracy": "0.981", "bytes": 41000}),
        probation=ProbationPolicy(),
    )
    fields.update(overrides)
    return Release(**fields)


def test_release_round_trips_through_canonical_json():
    release = make_release()
    signed = json.loads(canonical_json(release.to_signed()))
    assert Release.parse_signed(signed) == release


def test_deployment_round_trips():
    dep = Deployment(
        "r-1",
        "cam-01",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
        {"signed": {}, "signatures": []},
    )
    assert Deployment.parse_signed(json.loads(canonical_json(dep.to_signed()))) == dep


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("version"), "signed.version"),
        (lambda d: d.update(version="2"), "signed.version"),
        (lambda d: d.update(version=-1), "signed.version"),
        (lambda d: d.update(colour="red"), "signed.colour"),
        (lambda d: d["target"].pop("sha256"), "signed.target.sha256"),
        (lambda d: d["target"].update(sha256="XYZ"), "signed.target.sha256"),
        (lambda d: d["artifact"].update(size=True), "signed.artifact.size"),
        (lambda d: d["artifact"].update(codec="gzip"), "signed.artifact.codec"),
        (lambda d: d["deltas"][0].update(extra=1), "signed.deltas[0].extra"),
        (lambda d: d["io"]["inputs"][0].update(dtype="complex64"), "signed.io.inputs[0].dtype"),
        (lambda d: d["io"]["inputs"][0]["shape"].append("x"), "signed.io.inputs[0].shape[4]"),
        (lambda d: d.update(expires="tomorrow"), "signed.expires"),
        (lambda d: d.update(_type="deployment"), "signed._type"),
        (lambda d: d["probation"].pop("min_inferences"), "signed.probation.min_inferences"),
        (lambda d: d["provenance"]["metrics"].update(x=[1]), "signed.provenance.metrics.x"),
        (lambda d: d.update(name="../etc"), "signed.name"),
    ],
)
def test_bad_fields_are_rejected_by_name(mutate, field):
    signed = copy.deepcopy(make_release().to_signed())
    mutate(signed)
    with pytest.raises(MalformedDocument) as info:
        Release.parse_signed(signed)
    assert info.value.field == field


def test_deployment_rejects_bad_device_id():
    dep = Deployment("r-1", "cam-01", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", {})
    signed = dep.to_signed()
    signed["device_id"] = "cam/01"
    with pytest.raises(MalformedDocument) as info:
        Deployment.parse_signed(signed)
    assert info.value.field == "signed.device_id"


def test_load_json_caps_size_before_parsing():
    with pytest.raises(PayloadTooLarge):
        load_json(b" " * 2000 + b"{}", max_bytes=1000)
    with pytest.raises(MalformedDocument):
        load_json(b"\xff\xfe")
    assert load_json(b'{"a": 1}') == {"a": 1}


def test_signature_fit_ignores_names_but_not_shapes_or_dtypes():
    a = IOSignature(
        (TensorSpec("x", (1, 28, 28, 1), "float32"),), (TensorSpec("y", (1, 10), "float32"),)
    )
    b = IOSignature(
        (TensorSpec("serving_x", (1, 28, 28, 1), "float32"),),
        (TensorSpec("z", (1, 10), "float32"),),
    )
    c = IOSignature(
        (TensorSpec("x", (1, 32, 32, 1), "float32"),), (TensorSpec("y", (1, 10), "float32"),)
    )
    d = IOSignature(
        (TensorSpec("x", (1, 28, 28, 1), "int8", "0.1", 3),), (TensorSpec("y", (1, 10), "float32"),)
    )
    assert a.fits(b)
    assert not a.fits(c)
    assert not a.fits(d)
