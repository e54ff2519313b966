"""The variant chooser with real models and real (file://) artifacts: only candidates within
the quality budget are measured, a candidate whose bytes fail their hash is left out with its
reason, and a device already running one of a release's variants sees that release as
current (a re-delivered deployment is a verified no-op)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.runtime import load_model
from agent.update.fetch import fetcher_for
from agent.update.retrieval import Pace
from agent.update.variants import VariantChooser
from shared.builders import build_deployment, package_model
from shared.documents import Release
from shared.envelope import sign_envelope
from shared.errors import MalformedDocument
from shared.keys import Keyring, SigningKey
from shared.variants import Variant, VariantSet
from shared.verify import verify_deployment
from tests.agent.slow_variant import slow_variant
from tests.shared.test_documents import make_release

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
DIGITS_FT = REPO / "examples" / "models" / "digits-ft.tflite"


def _variant(tmp_path: Path, name: str, blob: bytes, quality_ppm: int) -> Variant:
    package = package_model(blob, level=3)
    path = tmp_path / f"{name}.zst"
    path.write_bytes(package.full)
    return Variant(
        name,
        quality_ppm,
        package.target.sha256,
        package.target.size,
        path.as_uri(),
        package.full_sha256,
        len(package.full),
    )


def _chooser(tmp_path: Path) -> VariantChooser:
    config = parse_config(f"""
device_id = "dev-1"
profile = "x86-gateway"
state_dir = "{tmp_path / "state"}"
[model]
name = "digits"
initial = "{DIGITS}"
[source]
uri = "synthetic:image"
[trust]
keys = ["{"ab" * 32}"]
""")
    return VariantChooser(
        config,
        tmp_path / "state" / "downloads",
        lambda url: fetcher_for(url, 10.0),
        Pace(),
        lambda p, t, d: load_model(p, t, d),
    )


def _release(candidates: tuple[Variant, ...], min_quality_ppm: int) -> Release:
    first = candidates[0]
    release = make_release(version=1, deltas=())
    return replace(
        release,
        target=replace(release.target, sha256=first.sha256, size=first.size),
        artifact=replace(
            release.artifact, url=first.url, sha256=first.artifact_sha256, size=first.artifact_size
        ),
        variants=VariantSet(candidates, min_quality_ppm, 3000),
    )


def test_only_candidates_within_the_quality_budget_are_measured(tmp_path: Path) -> None:
    slow = _variant(tmp_path, "slow", slow_variant(DIGITS_FT.read_bytes(), 20), 990_000)
    fast = _variant(tmp_path, "fast", DIGITS_FT.read_bytes(), 970_000)  # under the budget
    chooser = _chooser(tmp_path)
    reports: list[dict] = []  # type: ignore[type-arg]
    chooser.report = reports.append
    chosen = chooser.choose(_release((slow, fast), 980_000), (), None)
    assert chosen.target.sha256 == slow.sha256  # slower, but the only one within budget
    (report,) = reports
    assert report["chosen"] == "slow"
    assert report["figures"]["fast"]["skipped"] == "under the quality budget"
    assert "p50_ms" not in report["figures"]["fast"]

    # with the budget lowered, the same two are measured and the faster one wins
    chosen = chooser.choose(_release((slow, fast), 900_000), (), None)
    assert chosen.target.sha256 == fast.sha256 and chosen.artifact.url == fast.url
    figures = chooser.last["figures"]  # type: ignore[index]
    assert figures["fast"]["p50_ms"] < figures["slow"]["p50_ms"]


def test_a_candidate_whose_bytes_fail_their_hash_is_left_out(tmp_path: Path) -> None:
    good = _variant(tmp_path, "good", DIGITS_FT.read_bytes(), 990_000)
    bad = _variant(tmp_path, "bad", slow_variant(DIGITS_FT.read_bytes(), 1), 990_000)
    Path(bad.url.removeprefix("file://")).write_bytes(
        package_model(DIGITS.read_bytes(), level=3).full
    )  # other bytes than declared
    chooser = _chooser(tmp_path)
    chosen = chooser.choose(_release((good, bad), 0), (), None)
    assert chosen.target.sha256 == good.sha256
    reason = chooser.last["figures"]["bad"]["skipped"]  # type: ignore[index]
    assert reason.split(":")[0] in ("hash_mismatch", "corrupt_artifact"), reason
    assert not list((tmp_path / "state" / "downloads").glob("*.part"))


def test_a_device_running_a_variant_sees_the_release_as_current(tmp_path: Path) -> None:
    key = SigningKey.generate()
    fast = _variant(tmp_path, "fast", DIGITS_FT.read_bytes(), 990_000)
    slow = _variant(tmp_path, "slow", slow_variant(DIGITS_FT.read_bytes(), 2), 990_000)
    release = _release((slow, fast), 0)
    envelope = sign_envelope(release.to_signed(), [key])
    now = datetime(2027, 1, 1, tzinfo=UTC)
    deployment = json.dumps(
        build_deployment(release=envelope, device_id="dev-1", rollout_id="r-1", keys=[key], now=now)
    ).encode()
    verified = verify_deployment(
        deployment,
        Keyring([key.public], 1),
        device_id="dev-1",
        profile="x86-gateway",
        model_name="digits",
        installed_version=1,
        installed_sha256=fast.sha256,
        now=now,
    )
    assert verified.is_current
    assert hashlib.sha256(DIGITS_FT.read_bytes()).hexdigest() == fast.sha256

    signed = release.to_signed()
    signed["variants"]["candidates"] = [fast.to_dict()]  # the target is not a candidate
    with pytest.raises(MalformedDocument):
        Release.parse_signed(signed)
