"""`litefleet-agent check-config`: one line per problem, exit 2 when invalid, the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
KEY = "ab" * 32


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(body)
    return path


def valid(tmp_path: Path, initial: Path = DIGITS) -> str:
    return f"""
device_id = "cam-01"
profile = "x86-gateway"
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
[model]
name = "digits"
initial = "{initial}"
[source]
uri = "synthetic:image"
[trust]
keys = ["{KEY}"]
"""


def test_a_valid_config_with_a_loading_model_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(write(tmp_path, valid(tmp_path)))]) == 0
    out = capsys.readouterr().out
    assert "is valid (device cam-01, profile x86-gateway)" in out
    assert "digits.tflite loads" in out and "[1, 28, 28, 1] float32" in out


def test_every_problem_gets_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = valid(tmp_path).replace('device_id = "cam-01"', 'device_id = "cam 01!"')
    body = body.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\nport = 70000\ncolour = "red"')
    body = body.replace(f'keys = ["{KEY}"]', 'keys = ["not-a-key"]')
    path = write(tmp_path, body)
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4, err
    joined = "\n".join(err)
    for key in ("device_id", "mqtt.port", "mqtt.colour", "trust.keys[0]"):
        assert f": {key}: " in joined, key


def test_a_model_that_does_not_load_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"TFL3 this is not a flatbuffer" * 10)
    path = write(tmp_path, valid(tmp_path, bogus))
    assert main(["check-config", "--config", str(path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith(f"model.initial: {bogus} does not load")
    # config keys alone are fine
    assert main(["check-config", "--config", str(path), "--no-model"]) == 0


def test_a_missing_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_bounds_of_the_link_and_the_outbox_are_checked(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = valid(tmp_path).replace('host = "127.0.0.1"', 'host = "127.0.0.1"\ninbound_queue = 0')
    body += '[outbox]\nmax_rows = -5\nsynchronous = "OFF"\nshutdown_flush_s = 0\n'
    body += "[telemetry]\nevent_queue = 0\n"
    assert main(["check-config", "--config", str(write(tmp_path, body)), "--no-model"]) == 2
    err = capsys.readouterr().err
    for key in (
        "mqtt.inbound_queue",
        "outbox.max_rows",
        "outbox.synchronous",
        "outbox.shutdown_flush_s",
        "telemetry.event_queue",
    ):
        assert f": {key}: " in err, key


def test_a_model_that_does_not_load_is_never_called_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"TFL3 this is not a flatbuffer" * 10)
    assert (
        main(
            ["check-config", "--config", str(write(tmp_path, valid(tmp_path, bogus))), "--offline"]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert "does not load" in captured.err
    assert "valid" not in captured.out and "1 problem(s)" in captured.out


def test_warns_about_a_source_it_cannot_open_and_a_broker_it_cannot_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mosquitto
) -> None:
    from tests.conftest import free_port

    missing = tmp_path / "no-such-video.mp4"
    body = valid(tmp_path).replace('uri = "synthetic:image"', f'uri = "file://{missing}"')
    body = body.replace('host = "127.0.0.1"', f'host = "127.0.0.1"\nport = {free_port()}')
    assert main(["check-config", "--config", str(write(tmp_path, body)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert len(report["warnings"]) == 2
    source, broker = report["warnings"]
    assert source.startswith("warning: source.uri: cannot open") and str(missing) in source
    assert broker.startswith("warning: mqtt: cannot reach the broker at 127.0.0.1:")

    # the same config with a real video and a running broker: no warning
    video = tmp_path / "ok.mp4"
    _write_video(video)
    body = valid(tmp_path).replace('uri = "synthetic:image"', f'uri = "file://{video}"')
    body = body.replace('host = "127.0.0.1"', f'host = "127.0.0.1"\nport = {mosquitto.port}')
    assert main(["check-config", "--config", str(write(tmp_path, body)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def _write_video(path: Path) -> None:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    for i in range(5):
        writer.write(np.full((32, 32, 3), i * 40, dtype=np.uint8))
    writer.release()


def test_the_commented_example_config_passes(capsys: pytest.CaptureFixture[str]) -> None:
    example = REPO / "examples" / "agent.toml"
    assert main(["check-config", "--config", str(example), "--json", "--offline"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert any("digits.tflite loads" in n for n in report["notes"])
    text = example.read_text()
    assert text.count("\n#") >= 20  # commented, line by line
    for uri in (
        "camera:0",
        "/dev/video0",
        "file://",
        "rtsp://",
        "images://",
        "sensor+csv://",
        "sensor+serial://",
        "synthetic:image",
        "synthetic:sensor",
    ):
        assert uri in text, uri


def test_install_md_documents_every_source_uri_with_its_options() -> None:
    from agent.config import SOURCE_SCHEMES

    doc = (REPO / "docs" / "install.md").read_text()
    table = doc[doc.index("### Sources") :]
    for scheme in SOURCE_SCHEMES:
        assert f"`{scheme}" in table, scheme
    for option in ("?fps=N", "?rate=N", "?baud=N", "loop = true", "reconnect_max_s"):
        assert option in table, option
