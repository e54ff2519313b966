"""The operator's CLI as a shell sees it: --version, a base install without the cloud extra,
pipes (full ids, a reader that goes away), groups, and the releases and events views."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cloud.cli import main
from cloud.config import load_cloud_config
from cloud.ingest import Ingester
from cloud.store import open_store
from shared.messages import DeviceState, Event, encode_message
from shared.topics import Channel, topic
from tests.cloud.conftest import DIGITS, DIGITS_FT, CloudEnv, write_config
from tests.cloud.test_ingest import device_client, wait_for

REPO = Path(__file__).resolve().parents[2]
LONG_ID = "gateway-building-7-floor-3-north-wing-camera-entrance-0001"  # 57 characters


def run_cli(
    *args: str,
    env_extra: dict[str, str] | None = None,
    module: str = "cloud.cli",
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_version_on_both_commands() -> None:
    for module, name in (("cloud.cli", "litefleet"), ("agent.cli", "litefleet-agent")):
        done = run_cli("--version", module=module)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{name} 0.1.0"


def test_a_base_install_without_rich_says_which_extra_in_one_line(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _HideRich:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rich' or name.startswith('rich.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _HideRich())\n"
    )
    env = {"PYTHONPATH": f"{hide}{os.pathsep}{REPO}"}
    probe = subprocess.run(
        [sys.executable, "-c", "import rich"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "No module named 'rich'" in probe.stderr  # the hook really hides rich
    done = run_cli("devices", env_extra=env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "cloud" in done.stderr and "litefleet[cloud]" in done.stderr
    assert run_cli("--version", env_extra=env).stdout.strip() == "litefleet 0.1.0"


def seed_devices(db_path: Path, ids: list[str]) -> None:
    db = open_store(db_path)
    for d in ids:
        db.execute(
            "INSERT INTO devices (device_id, online, profile, source_status, last_seen) "
            "VALUES (?, 1, 'rpi5', 'up', ?)",
            (d, time.time()),
        )
    db.close()


def test_piped_tables_keep_long_ids_whole_and_show_the_source(cloud_env: CloudEnv) -> None:
    seed_devices(cloud_env.db, [LONG_ID, "cam-02"])
    done = run_cli(
        "devices", "--config", str(cloud_env.config), env_extra={"COLUMNS": "40"}
    )  # a narrow terminal, and a pipe
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["device", "online", "profile", "model", "source"]
    assert lines[1].split()[0] == "cam-02"
    assert lines[2].split()[:5] == [LONG_ID, "yes", "rpi5", "-", "up"]


def test_a_narrow_terminal_gets_whole_ids_too(cloud_env: CloudEnv) -> None:
    seed_devices(cloud_env.db, [LONG_ID])
    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "40", "TERM": "xterm"}
    for extra in ((), ("--wide",)):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud.cli",
                "devices",
                *extra,
                "--config",
                str(cloud_env.config),
            ],
            stdout=secondary,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.wait(60) == 0
        out = b""
        while select.select([primary], [], [], 0.5)[0]:
            out += os.read(primary, 65536)
        assert LONG_ID.encode() in out  # whole, on one line
    os.close(primary)
    os.close(secondary)


def test_a_reader_that_goes_away_ends_the_command_quietly(cloud_env: CloudEnv) -> None:
    seed_devices(cloud_env.db, [f"cam-{i:04d}" for i in range(3000)])  # more than a pipe holds
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        f"set -o pipefail; {sys.executable} -m cloud.cli devices --config {cloud_env.config} "
        "| head -1",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.stdout.split()[0] == "device"  # head printed the header line
    assert done.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert done.returncode == 0


def test_groups_add_warns_about_a_device_never_heard_from(cloud_env: CloudEnv, capsys) -> None:
    seed_devices(cloud_env.db, ["cam-01"])
    assert (
        main(["groups", "add", "lobby", "cam-01", "cma-02", "--config", str(cloud_env.config)]) == 0
    )
    err = capsys.readouterr().err
    assert "cma-02" in err and "warning" in err
    assert "cam-01" not in err  # a known device: no warning
    assert main(["groups", "--json", "--config", str(cloud_env.config)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"group": "lobby", "devices": ["cam-01", "cma-02"]}
    ]


def test_compress_accepts_config_as_every_command_does(cloud_env: CloudEnv, tmp_path) -> None:
    done = run_cli(
        "compress",
        str(DIGITS),
        "--profile",
        "x86-gateway",
        "--methods",
        "float16",
        "--out",
        str(tmp_path / "out"),
        "--config",
        str(cloud_env.config),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "float16.tflite").is_file()


def test_releases_lists_versions_sizes_deltas_and_provenance(cloud_env: CloudEnv, capsys) -> None:
    for version, model in ((1, DIGITS), (2, DIGITS_FT)):
        assert (
            main(
                [
                    "release",
                    str(model),
                    "--name",
                    "digits",
                    "--version",
                    str(version),
                    "--profile",
                    "rpi5",
                    "--config",
                    str(cloud_env.config),
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert main(["releases", "--json", "--config", str(cloud_env.config)]) == 0
    views = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["version"], v["profile"]) for v in views] == [
        ("digits", 2, "rpi5"),
        ("digits", 1, "rpi5"),
    ]
    newest, oldest = views
    assert newest["target"]["size"] == DIGITS_FT.stat().st_size
    assert newest["artifact"]["size"] > 0
    assert [d["base_sha256"] for d in newest["deltas"]] == [oldest["target"]["sha256"]]
    assert oldest["deltas"] == [] and "recipe" in newest["provenance"]
    assert main(["releases", "digits", "--config", str(cloud_env.config)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["model", "version", "profile"]
    assert oldest["target"]["sha256"][:12] in table


@pytest.fixture
def ingesting(cloud_env: CloudEnv, mosquitto):
    config = write_config(
        cloud_env.root, mqtt_port=mosquitto.port, extra="[ingest]\nbatch_wait_s = 0.05\n"
    )
    ingester = Ingester(load_cloud_config(config))
    ingester.start()
    client = device_client(mosquitto.port, "cam-01")
    wait_for(client.is_connected, 10, "a connection")
    yield config, client
    client.disconnect()
    client.loop_stop()
    ingester.stop()


def publish_event(client, device_id: str, seq: int, kind: str, **detail: object) -> None:
    client.publish(
        topic(device_id, Channel.EVENTS),
        encode_message(Event(device_id, seq, time.time(), kind, dict(detail))),
        qos=1,
    )


def test_events_filter_and_follow_through_a_real_broker(
    ingesting, cloud_env: CloudEnv, capsys
) -> None:
    config, client = ingesting
    publish_event(client, "cam-01", 1, "source", status="down", error="cannot open")
    publish_event(client, "cam-01", 2, "error", message="inference failed")
    publish_event(client, "cam-02", 1, "source", status="up")
    wait_for(lambda: len(_events(capsys, config)) == 3, 30, "three events stored")
    only = _events(capsys, config, "--device", "cam-01", "--kind", "source")
    assert [(e["device_id"], e["seq"], e["detail"]) for e in only] == [
        ("cam-01", 1, {"status": "down", "error": "cannot open"})
    ]

    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "events",
            "--follow",
            "--json",
            "--kind",
            "source",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: list[dict[str, object]] = []
    assert follower.stdout is not None
    out = follower.stdout
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in out), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) == 2, 30, "the stored source events")
        publish_event(client, "cam-01", 3, "error", message="another")  # another kind
        publish_event(client, "cam-01", 4, "source", status="up")
        wait_for(lambda: len(lines) == 3, 30, "the new source event, followed")
        assert [(e["device_id"], e["seq"]) for e in lines] == [
            ("cam-01", 1),
            ("cam-02", 1),
            ("cam-01", 4),
        ]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)


def _events(capsys, config: Path, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["events", "--json", "--config", str(config), *args]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_devices_json_carries_the_source_status_from_the_device_state(
    ingesting, cloud_env, capsys
) -> None:
    config, client = ingesting
    state = DeviceState(
        "cam-01",
        True,
        time.time(),
        "0.1.0",
        "rpi5",
        None,
        "idle",
        source_status="down: cannot open /dev/video0",
    )
    client.publish(topic("cam-01", Channel.STATE), encode_message(state), qos=1, retain=True)

    def listed() -> list[dict]:
        capsys.readouterr()
        assert main(["devices", "--json", "--config", str(config)]) == 0
        return list(json.loads(capsys.readouterr().out))

    wait_for(lambda: len(listed()) == 1, 30, "the device's state stored")
    assert listed()[0]["source_status"] == "down: cannot open /dev/video0"
