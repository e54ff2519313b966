"""`litefleet release`: real models in, signed release and zstd artifacts out."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cloud.cli import main
from cloud.compress import CompressOptions, compress
from cloud.compress.quantize import quantize_tflite
from cloud.config import CloudConfigInvalid, parse_cloud_config
from cloud.release_report import stored_summary
from cloud.store import dashboard as queries
from cloud.store import open_store
from device_profiles import load_profile
from shared.codec import decompress, delta_base_sha256, delta_decode
from shared.documents import parse_time
from shared.keys import Keyring
from shared.verify import verify_release
from tests.cloud.conftest import DIGITS, DIGITS_FT, REPO, VIBRATION, CloudEnv

PROFILE = "x86-gateway"


def release(env: CloudEnv, model: Path, version: int, *extra: str) -> list[str]:
    return [
        "release",
        str(model),
        "--name",
        "digits",
        "--version",
        str(version),
        "--profile",
        PROFILE,
        "--config",
        str(env.config),
        *extra,
    ]


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_release_signs_uploads_and_deltas(cloud_env: CloudEnv, capsys) -> None:
    first = run_json(capsys, release(cloud_env, DIGITS, 1, "--json"))
    second = run_json(capsys, release(cloud_env, DIGITS_FT, 2, "--json"))
    keyring = Keyring((cloud_env.key.public,))

    r1 = verify_release(first["envelope"], keyring, PROFILE, datetime.now(UTC))
    r2 = verify_release(second["envelope"], keyring, PROFILE, datetime.now(UTC))
    assert r1.deltas == () and r1.version == 1
    assert r2.target.sha256 == hashlib.sha256(DIGITS_FT.read_bytes()).hexdigest()
    assert r2.io.inputs[0].shape == (1, 28, 28, 1) and r2.io.inputs[0].dtype == "float32"
    assert r2.io.outputs[0].shape == (1, 10)

    full = cloud_env.artifacts / "digits/2/x86-gateway/digits-2-x86-gateway.tflite.zst"
    assert (
        r2.artifact.url
        == "http://127.0.0.1:8080/artifacts/digits/2/x86-gateway/digits-2-x86-gateway.tflite.zst"
    )
    assert hashlib.sha256(full.read_bytes()).hexdigest() == r2.artifact.sha256
    assert decompress(full.read_bytes(), r2.target.size) == DIGITS_FT.read_bytes()

    (delta,) = r2.deltas
    assert delta.base_sha256 == r1.target.sha256
    data = (
        cloud_env.artifacts
        / f"digits/2/x86-gateway/digits-2-x86-gateway.from-{r1.target.sha256[:16]}.delta"
    ).read_bytes()
    assert hashlib.sha256(data).hexdigest() == delta.sha256 and len(data) == delta.size
    assert delta_base_sha256(data) == r1.target.sha256
    assert delta_decode(DIGITS.read_bytes(), data, r2.target.size) == DIGITS_FT.read_bytes()
    assert delta.size < r2.artifact.size / 10  # only the last layer changed

    written = json.loads(Path(second["file"]).read_text())
    assert written == second["envelope"]
    assert second["deltas"][0]["base_sha256"] == r1.target.sha256


def test_versions_must_increase(cloud_env: CloudEnv, capsys) -> None:
    run_json(capsys, release(cloud_env, DIGITS, 2, "--json"))
    for version in (2, 1):
        assert main(release(cloud_env, DIGITS_FT, version)) == 3
        assert "version_not_newer" in capsys.readouterr().err
    assert not (cloud_env.artifacts / "digits/1").exists()
    files = sorted(p.name for p in (cloud_env.artifacts / "digits/2/x86-gateway").iterdir())
    assert files == ["digits-2-x86-gateway.release.json", "digits-2-x86-gateway.tflite.zst"]


def test_each_profile_gets_its_own_build_of_a_version(cloud_env: CloudEnv, capsys) -> None:
    x86 = run_json(capsys, release(cloud_env, DIGITS, 1, "--json"))
    args = release(cloud_env, DIGITS, 1, "--json")
    args[args.index("--profile") + 1] = "rpi4"
    rpi = run_json(capsys, args)
    assert x86["envelope"]["signed"]["profile"] == "x86-gateway"
    assert rpi["envelope"]["signed"]["profile"] == "rpi4"
    assert x86["artifact"]["url"] != rpi["artifact"]["url"]
    assert (cloud_env.artifacts / "digits/1/rpi4/digits-1-rpi4.tflite.zst").exists()
    assert main(args) == 3  # the same profile again at the same version is refused
    assert "version_not_newer" in capsys.readouterr().err


def test_signing_key_readable_by_group_is_refused(cloud_env: CloudEnv, capsys) -> None:
    os.chmod(cloud_env.root / "keys" / "release.key", 0o640)
    assert main(release(cloud_env, DIGITS, 1)) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "release.key" in err
    assert not (cloud_env.root / "cloud.db").exists() or not list(
        (cloud_env.artifacts / "digits").glob("*/*.release.json")
    )


def test_not_a_model_is_refused_and_nothing_is_recorded(cloud_env: CloudEnv, tmp_path, capsys):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"TFL3" + os.urandom(4000))
    assert main(release(cloud_env, bogus, 1)) == 3
    assert "invalid_model" in capsys.readouterr().err
    assert not cloud_env.artifacts.exists() or not any(cloud_env.artifacts.rglob("*.zst"))
    # the version is still free
    run_json(capsys, release(cloud_env, DIGITS, 1, "--json"))


def test_provenance_from_report_and_expiry(cloud_env: CloudEnv, tmp_path, capsys) -> None:
    parent = "ab" * 32
    sha = hashlib.sha256(DIGITS.read_bytes()).hexdigest()  # the report is about this file
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "baseline": {"accuracy": 0.98},
                "candidates": [{"method": "dynamic_int8"}],
                "chosen": "dynamic_int8",
                "reason": "smallest within budget",
                "provenance": {
                    "parent_sha256": parent,
                    "recipe": "dynamic_int8",
                    "metrics": {"accuracy": 0.9811, "size_bytes": 61234, "ok": True, "sha256": sha},
                },
            }
        )
    )
    out = run_json(
        capsys,
        release(
            cloud_env,
            DIGITS,
            1,
            "--json",
            "--from-report",
            str(report),
            "--expires",
            "12h",
            "--min-inferences",
            "20",
            "--max-latency-ratio",
            "1.5",
            "--min-agreement",
            "90%",
        ),
    )
    signed = out["envelope"]["signed"]
    assert signed["provenance"]["parent_sha256"] == parent
    assert signed["provenance"]["recipe"] == "dynamic_int8"
    metrics = signed["provenance"]["metrics"]
    assert metrics["accuracy"] == "0.9811" and metrics["size_bytes"] == 61234
    assert metrics["ok"] == "true" and metrics["chosen"] == "dynamic_int8"
    life = parse_time(signed["expires"]) - parse_time(signed["created"])
    assert life.total_seconds() == 12 * 3600
    assert signed["probation"]["min_inferences"] == 20
    assert signed["probation"]["max_latency_ratio_pct"] == 150
    assert signed["probation"]["min_agreement_pct"] == 90


def test_bad_expires_is_a_usage_error(cloud_env: CloudEnv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(release(cloud_env, DIGITS, 1, "--expires", "soon"))
    assert e.value.code == 2
    assert "not a duration" in capsys.readouterr().err


def test_config_lists_every_problem(tmp_path: Path) -> None:
    text = """
[mqtt]
port = 99999
colour = "blue"
[store]
artifacts = "ftp://somewhere"
[http]
port = "eighty"
"""
    with pytest.raises(CloudConfigInvalid) as e:
        parse_cloud_config(text, "cloud.toml", tmp_path)
    problems = e.value.problems
    assert len(problems) == 4, problems
    assert any("mqtt.port" in p for p in problems)
    assert any("mqtt.colour: unknown key" in p for p in problems)
    assert any("store.artifacts" in p for p in problems)
    assert any("http.port" in p for p in problems)


def test_config_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    cfg = parse_cloud_config(
        '[store]\ndb = "x/cloud.db"\nartifacts = "file://arts"\n[signing]\nkey = "k/release.key"\n',
        "c",
        tmp_path,
    )
    assert cfg.store.db == tmp_path / "x" / "cloud.db"
    assert cfg.store.artifacts == (tmp_path / "arts").as_uri()
    assert cfg.signing.key == tmp_path / "k" / "release.key"


# ---- the devices' application: I/O signature and provenance checks ---------------------------

FP16_CLASSIFIER = REPO / "tests" / "data" / "fp16_classifier.tflite"
TRAIN = REPO / "examples" / "data" / "digits-train.npz"
FAST = CompressOptions(
    latency_warmup=1, latency_runs=5, calibration_samples=64, max_eval_samples=100
)


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run a release that must be refused with exit 2 and one line; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def no_release_recorded(env: CloudEnv, version: int) -> bool:
    return not list(env.artifacts.glob(f"digits/{version}/*/*.release.json"))


def test_a_model_with_other_io_than_the_previous_release_is_refused(
    cloud_env: CloudEnv, tmp_path: Path, capsys
) -> None:
    run_json(capsys, release(cloud_env, DIGITS, 1, "--json"))
    with np.load(TRAIN) as npz:
        calibration = [npz["x"][:64].astype(np.float32)]
    int8_io = tmp_path / "digits-int8-io.tflite"  # what `compress` chose before: int8 in and out
    int8_io.write_bytes(
        quantize_tflite(DIGITS.read_bytes(), "int8", calibration, int8_io=True).blob
    )
    err = refused(capsys, release(cloud_env, int8_io, 2))
    assert "io_signature_mismatch" in err and "int8[1,28,28,1]" in err and "--new-io" in err
    assert no_release_recorded(cloud_env, 2)
    # the operator says the application changes with it
    signed = run_json(capsys, release(cloud_env, int8_io, 2, "--json", "--new-io"))
    assert signed["envelope"]["signed"]["io"]["inputs"][0]["dtype"] == "int8"


def test_another_models_io_under_a_released_name_is_refused(cloud_env: CloudEnv, capsys) -> None:
    args = release(cloud_env, DIGITS, 1, "--json")
    args[args.index("--profile") + 1] = "rpi4"
    run_json(capsys, args)
    # vibration under `digits`, on a profile where digits was never released
    err = refused(capsys, release(cloud_env, VIBRATION, 2))
    assert "digits@1 for profile rpi4" in err and "io_signature_mismatch" in err
    assert no_release_recorded(cloud_env, 2)


def test_from_report_refuses_a_file_that_is_not_the_chosen_candidate(
    cloud_env: CloudEnv, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    report = compress(
        DIGITS, load_profile("rpi5"), TRAIN, None, ["dynamic_int8", "int8"], out, options=FAST
    )
    assert report.chosen == "int8"  # rpi5 prefers it, and it keeps float32 I/O
    args = ["--from-report", str(out / "report.json")]
    # the journey's bug: the dynamic_int8 file signed as "chosen": "int8"
    err = refused(capsys, release(cloud_env, out / "dynamic_int8.tflite", 1, *args))
    assert "is not that of" in err and "int8 candidate" in err
    assert no_release_recorded(cloud_env, 1)

    signed = run_json(capsys, release(cloud_env, out / "chosen.tflite", 1, "--json", *args))
    prov = signed["envelope"]["signed"]["provenance"]
    assert prov["metrics"]["method"] == prov["metrics"]["chosen"] == "int8"
    assert prov["metrics"]["sha256"] == signed["envelope"]["signed"]["target"]["sha256"]
    # another candidate, named: its own provenance
    signed = run_json(
        capsys,
        release(
            cloud_env,
            out / "dynamic_int8.tflite",
            2,
            "--json",
            *args,
            "--candidate",
            "dynamic_int8",
        ),
    )
    prov = signed["envelope"]["signed"]["provenance"]
    assert prov["metrics"]["method"] == prov["metrics"]["chosen"] == "dynamic_int8"
    assert prov["recipe"].startswith("dynamic_int8: ")
    # both releases keep the real report's figures; the second names the candidate it is
    db = open_store(cloud_env.db)
    try:
        kept = {r["version"]: stored_summary(r["report"]) for r in queries.release_envelopes(db)}
    finally:
        db.close()
    for version, released in ((1, "int8"), (2, "dynamic_int8")):
        summary = kept[version]
        assert summary is not None and summary["chosen"] == "int8"
        assert summary["released"] == released
        rows = {c["method"]: c for c in summary["candidates"]}
        assert list(rows) == ["original", "dynamic_int8", "int8"]
        assert rows["int8"]["chosen"] and rows[released]["released"]
        assert rows["int8"]["bytes"] == report.candidate("int8").bytes
        assert rows["original"]["bytes"] == DIGITS.stat().st_size
        assert rows["int8"]["latency_p50_ms"] > 0 and 0 < rows["int8"]["quality"] <= 1


def test_a_no_effect_candidate_is_never_signed_as_its_method(
    cloud_env: CloudEnv, tmp_path: Path, capsys
) -> None:
    """float16 on a model whose weights are float16 already compresses nothing."""
    out = tmp_path / "out"
    report = compress(
        FP16_CLASSIFIER, load_profile("x86-gateway"), None, None, ["float16"], out, options=FAST
    )
    assert report.candidate("float16").no_effect is not None
    assert report.chosen == "original" and "float16" not in report.provenances
    args = ["--from-report", str(out / "report.json")]
    err = refused(
        capsys, release(cloud_env, out / "float16.tflite", 1, *args, "--candidate", "float16")
    )
    assert "cannot be released as float16: no effect" in err
    # nor under the chosen name: the float16 file is not the original
    refused(capsys, release(cloud_env, out / "float16.tflite", 1, *args))
    assert no_release_recorded(cloud_env, 1)
    signed = run_json(capsys, release(cloud_env, out / "chosen.tflite", 1, "--json", *args))
    assert signed["envelope"]["signed"]["provenance"]["metrics"]["method"] == "original"
    assert (
        signed["envelope"]["signed"]["target"]["sha256"]
        == hashlib.sha256(FP16_CLASSIFIER.read_bytes()).hexdigest()
    )


# ---- the compression report, kept with the release for the dashboard --------------------------


def hand_report(sha: str, **extra: object) -> dict:
    """A compression report shaped as `Report.to_dict` writes it, about DIGITS as dynamic_int8."""
    row = {"zstd_bytes": 50_000, "latency_p95_ms": 0.5, "fits_budget": True, "misses": []}
    return {
        "schema": "litefleet.compress-report/2",
        "model": "/somewhere/models/digits.tflite",
        "profile": PROFILE,
        "eval": {"source": "digits-train.npz", "samples": 100, "labelled": True},
        "baseline": {
            **row,
            "method": "float32",
            "bytes": 240_000,
            "accuracy": 0.98,
            "agreement": 1.0,
            "latency_p50_ms": 0.4,
        },
        "candidates": [
            {
                **row,
                "method": "dynamic_int8",
                "bytes": 61_234,
                "accuracy": 0.975,
                "agreement": 0.99,
                "latency_p50_ms": 0.3,
            },
            {
                **row,
                "method": "int8",
                "bytes": 60_000,
                "accuracy": 0.9,
                "agreement": 0.91,
                "latency_p50_ms": 0.2,
                "fits_budget": False,
                "misses": ["accuracy drop 8 pt > 1"],
            },
        ],
        "skipped": [{"method": "pruned", "reason": "needs the Keras model"}],
        "chosen": "dynamic_int8",
        "reason": "smallest within budget\x07 " + "and then some " * 500,
        "provenances": {
            "dynamic_int8": {"recipe": "dynamic_int8", "metrics": {"sha256": sha}},
        },
        **extra,
    }


def test_release_from_report_stores_the_report_with_the_release(
    cloud_env: CloudEnv, store_url: str, tmp_path: Path, capsys
) -> None:
    """On each backend: the report's figures go into the release's row; a release made from a
    file has none (the control that the column is not filled regardless)."""
    config = cloud_env.config
    config.write_text(config.read_text().replace('db = "cloud.db"', f'url = "{store_url}"'))
    report = tmp_path / "report.json"
    report.write_text(json.dumps(hand_report(hashlib.sha256(DIGITS.read_bytes()).hexdigest())))
    first = run_json(capsys, release(cloud_env, DIGITS, 1, "--json", "--from-report", str(report)))
    # the reason's control character is not signed: the next release still reads this one
    assert "\x07" not in first["envelope"]["signed"]["provenance"]["metrics"]["reason"]
    run_json(capsys, release(cloud_env, DIGITS_FT, 2, "--json"))

    db = open_store(store_url)
    try:
        rows = {r["version"]: r for r in queries.release_envelopes(db)}
    finally:
        db.close()
    assert rows[2]["report"] == ""
    kept = stored_summary(rows[1]["report"])
    assert kept is not None and kept["chosen"] == kept["released"] == "dynamic_int8"
    assert kept["model"] == "digits.tflite" and kept["quality"] == "accuracy"
    assert kept["eval_samples"] == 100
    table = {c["method"]: c for c in kept["candidates"]}
    assert list(table) == ["original", "dynamic_int8", "int8"]
    assert table["original"]["baseline"] and table["original"]["bytes"] == 240_000
    assert table["dynamic_int8"]["chosen"] and not table["int8"]["chosen"]
    assert table["dynamic_int8"]["bytes"] == 61_234 and table["dynamic_int8"]["drop_pts"] == 0.5
    assert table["int8"]["latency_p50_ms"] == 0.2
    assert table["int8"]["note"] == "over the profile's budget: accuracy drop 8 pt > 1"
    assert kept["skipped"] == [{"method": "pruned", "reason": "needs the Keras model"}]
    # operator text is cut and cleaned
    assert len(kept["reason"]) == 1000 and kept["reason"].startswith("smallest within budget ")
    assert len(rows[1]["report"]) < 4096  # the summary, not the report's whole text


def test_an_oversized_or_malformed_report_is_refused_and_nothing_released(
    cloud_env: CloudEnv, tmp_path: Path, capsys
) -> None:
    sha = hashlib.sha256(DIGITS.read_bytes()).hexdigest()
    report = tmp_path / "report.json"
    args = release(cloud_env, DIGITS, 1, "--from-report", str(report))

    many = hand_report(sha)
    many["candidates"] = many["candidates"] + [
        {"method": f"m{k}", "bytes": 1000 + k} for k in range(40)
    ]
    report.write_text(json.dumps(many))
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "lists 42 candidates; a release keeps the figures of at most 31" in err

    bad = hand_report(sha)
    bad["candidates"][1]["bytes"] = "a lot"
    report.write_text(json.dumps(bad))
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "report.candidates[1].bytes: expected a number" in err

    report.write_text(json.dumps(hand_report(sha, baseline=[1, 2])))
    assert main(args) == 3
    assert "report.baseline" in capsys.readouterr().err
    assert no_release_recorded(cloud_env, 1)

    # control: the same report, well formed, is released
    report.write_text(json.dumps(hand_report(sha)))
    assert main(args) == 0, capsys.readouterr().err
    assert not no_release_recorded(cloud_env, 1)
