"""`litefleet check-config`: the commented example passes; each problem is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from cloud.cli import main
from tests.cloud.conftest import CloudEnv, write_config

REPO = Path(__file__).resolve().parents[2]


def test_the_commented_example_config_passes(capsys) -> None:
    example = REPO / "examples" / "cloud.toml"
    assert main(["check-config", "--config", str(example), "--json", "--offline"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert report["warnings"] == [w for w in report["warnings"] if w.startswith("warning: ")]
    assert example.read_text().count("\n#") >= 15


def test_a_good_config_with_its_key_and_broker_has_no_warning(
    cloud_env: CloudEnv, mosquitto, capsys
) -> None:
    config = write_config(cloud_env.root, mqtt_port=mosquitto.port)
    assert main(["check-config", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"ok": True, "problems": [], "warnings": [], "notes": report["notes"]}
    assert "is valid" in report["notes"][0]


def test_each_problem_is_one_line_and_exit_2(cloud_env: CloudEnv, capsys) -> None:
    config = cloud_env.root / "cloud.toml"
    config.write_text('[mqtt]\nport = 99999\ncolour = "red"\n[store]\nartifacts = "ftp://x"\n')
    assert main(["check-config", "--config", str(config), "--offline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    for key in ("mqtt.port", "mqtt.colour", "store.artifacts"):
        assert any(key in line for line in err), key
    # a key file others can read is a problem, not a warning
    write_config(cloud_env.root)
    (cloud_env.root / "keys" / "release.key").chmod(0o644)
    assert main(["check-config", "--config", str(config), "--offline"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("signing.key: ") and "valid" not in out.out
