"""The reference profile a release signs: integers only, bounded, optional (older releases
sign the same bytes), and built from real model outputs the same way on both sides."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from shared.canonical import canonical_json
from shared.documents import Release
from shared.envelope import sign_envelope
from shared.errors import MalformedDocument, Rejected
from shared.features import FeatureExtractor, build_reference, fractions, psi
from shared.keys import Keyring, SigningKey
from shared.reference import SCALE, Feature, ReferenceProfile
from shared.verify import verify_release
from tests.shared.test_documents import make_release

REPO = Path(__file__).resolve().parents[2]


def reference() -> ReferenceProfile:
    release = make_release()
    rng = np.random.default_rng(0)
    x = rng.random((50, 28, 28, 1), dtype=np.float32)
    scores = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    return build_reference(
        release.io, x, [scores], drift_threshold_milli=250, confidence_threshold_pct=60
    )


def test_a_release_signs_its_reference_and_a_device_verifies_it() -> None:
    ref = reference()
    release = make_release(reference=ref)
    signed = release.to_signed()
    canonical_json(signed)  # no floats anywhere: it can be signed
    assert Release.parse_signed(json.loads(canonical_json(signed))) == release
    key = SigningKey.generate()
    envelope = sign_envelope(signed, [key])
    verified = verify_release(
        envelope, Keyring([key.public], 1), "x86-gateway", datetime(2027, 1, 1, tzinfo=UTC)
    )
    assert verified.reference == ref
    assert [f.name for f in ref.features] == ["input.c0", "output.class", "output.score"]
    assert ref.confidence_threshold_pct == 60 and ref.drift_threshold == 0.25

    tampered = copy.deepcopy(envelope)
    tampered["signed"]["reference"]["drift_threshold_milli"] = 100_000
    with pytest.raises(Rejected):  # the signature no longer covers it
        verify_release(
            tampered, Keyring([key.public], 1), "x86-gateway", datetime(2027, 1, 1, tzinfo=UTC)
        )


def test_a_release_without_reference_signs_what_it_signed_before() -> None:
    assert "reference" not in make_release().to_signed()
    assert Release.parse_signed(make_release().to_signed()).reference is None


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda r: r.update(scale=1000), "reference.scale"),
        (
            lambda r: r["features"][0].update(counts=[1.5] * len(r["features"][0]["counts"])),
            "reference.features[0].counts[0]",
        ),
        (
            lambda r: r["features"][0].update(counts=[-1] * len(r["features"][0]["counts"])),
            "reference.features[0].counts[0]",
        ),
        (
            lambda r: r["features"][0].update(counts=[0] * len(r["features"][0]["counts"])),
            "reference.features[0].counts",
        ),
        (lambda r: r["features"][0]["edges"].reverse(), "reference.features[0].edges"),
        (lambda r: r["features"][0].update(edges=[2**63]), "reference.features[0].edges[0]"),
        (lambda r: r["features"][0].update(edges=list(range(1100))), "reference.features[0].edges"),
        (
            lambda r: [f.update(edges=list(range(1000)), counts=[1] * 1001) for f in r["features"]],
            "reference.features",
        ),  # 3003 bins in all: more than a device's window holds
        (lambda r: r["features"][0].update(name="in put"), "reference.features[0].name"),
        (lambda r: r.update(features=r["features"] * 30), "reference.features"),
        (lambda r: r["features"].append(r["features"][0]), "reference.features"),
        (lambda r: r.update(extra=1), "reference.extra"),
        (lambda r: r.update(confidence_threshold_pct=101), "reference.confidence_threshold_pct"),
        (lambda r: r.update(drift_threshold_milli=0), "reference.drift_threshold_milli"),
        (lambda r: r.pop("samples"), "reference.samples"),
    ],
)
def test_a_bad_reference_is_refused_by_name(mutate, where) -> None:  # type: ignore[no-untyped-def]
    raw = reference().to_dict()
    mutate(raw)
    with pytest.raises(MalformedDocument) as e:
        ReferenceProfile.parse(raw)
    assert e.value.field == where


def test_live_frames_fall_in_the_reference_bins_the_same_way() -> None:
    """The device's per-frame features of the evaluation samples rebuild the reference's
    histograms: PSI ~ 0 for the same data, large for inverted images."""
    from cloud.compress.iospec import read_io
    from cloud.compress.litert import TFLiteModel

    model = REPO / "examples" / "models" / "digits.tflite"
    x = np.load(REPO / "examples" / "data" / "digits-eval.npz")["x"][:200]
    signature = read_io(model)
    outputs = TFLiteModel(model.read_bytes()).predict([x])
    ref = build_reference(
        signature, x, outputs, drift_threshold_milli=250, confidence_threshold_pct=50
    )
    extractor = FeatureExtractor(signature)

    def window(images: np.ndarray) -> list[float]:
        live = TFLiteModel(model.read_bytes()).predict([images])[0]
        sums = [np.zeros(len(f.edges) + 1) for f in ref.features]
        for image, out in zip(images, live, strict=True):
            values = extractor.frame([image[None]], [out[None]])
            for k, f in enumerate(ref.features):
                sums[k] += fractions(values[k], np.asarray(f.edges, dtype=np.float64) / SCALE)
        return [
            psi(s / len(images), np.asarray(f.counts) / sum(f.counts))
            for s, f in zip(sums, ref.features, strict=True)
        ]

    same = window(x)
    assert max(same) < 0.01, same
    inverted = window(1.0 - x)
    assert inverted[0] > 1.0, inverted  # the pixels moved far from the reference
    assert isinstance(ref.features[0], Feature)
