"""What the guide's end-to-end test runs its blocks in: a temporary machine.

`GuideFleet` holds the folder the guide's `/etc` and `/var/lib` paths are moved into, the free
ports that stand for 1883, 1884, 8080 and 8081, the environment the commands run with, and every
process the guide's blocks started (mosquitto, serve, agents), so that teardown stops each by
its own pid. The substitutions are the whole list in `rewrite`, plus `/etc/litefleet` (each
agent's own folder, `agent_rewrite`) and, in the test, `<id>` (the rollout's id): nothing else
of a command is changed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port
from tests.e2e.guide import (
    GUIDE,
    INSTALL,
    GuideBlock,
    Ran,
    Rewrite,
    guide_blocks,
    run_block,
    start_block,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = REPO / "examples" / "agent.toml"


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    """Give up after `timeout` seconds of `check()` not being true (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class GuideFleet:
    def __init__(self) -> None:
        # Under /tmp and open to others: the broker drops to the mosquitto user, which must
        # reach its files (pytest's own tmp folders are closed to other users).
        self.root = Path(tempfile.mkdtemp(prefix="litefleet-guide-", dir="/tmp"))
        self.root.chmod(0o755)
        self.work = self.root / "operator"  # where the operator runs `litefleet`
        self.work.mkdir()
        self.devices_port, self.cloud_port = free_port(), free_port()
        self.http_port, self.web_port = free_port(), free_port()  # artifacts + health, dashboard
        self.rewrite = Rewrite(
            {
                "/etc/litefleet-cloud": f"{self.root}/etc/litefleet-cloud",
                "/var/lib/litefleet-cloud": f"{self.root}/var/lib/litefleet-cloud",
                "/etc/mosquitto/litefleet": f"{self.root}/etc/mosquitto/litefleet",
                "/var/lib/mosquitto/litefleet": f"{self.root}/var/lib/mosquitto/litefleet",
                "1883": str(self.devices_port),
                "1884": str(self.cloud_port),
                "8081": str(self.http_port),
                "8080": str(self.web_port),
                "fleet.example": "127.0.0.1",  # the artifacts' public URL
                "0.0.0.0": "127.0.0.1",  # serve's HTTP listener, loopback only here
            }
        )
        bin_dir = Path(sys.executable).parent  # the venv's litefleet scripts
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}:/usr/sbin",
        }
        self.blocks = {b.name: b for doc in (GUIDE, INSTALL) for b in guide_blocks(doc.read_text())}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.broker_config = self.root / "etc" / "mosquitto" / "litefleet" / "mosquitto.conf"

    # -- running blocks ------------------------------------------------------------------------

    def block(self, name: str) -> GuideBlock:
        return self.blocks[name]

    def run(
        self,
        name: str,
        cwd: Path | None = None,
        timeout: float = 240.0,
        rewrite: Rewrite | None = None,
        ok: bool = True,
    ) -> list[Ran]:
        ran = run_block(
            self.block(name), cwd or self.work, self.env, timeout, rewrite or self.rewrite
        )
        if ok:
            failed = [r for r in ran if r.code != 0]
            assert not failed, (
                f"guide block {name}: {failed[0].command!r} exit "
                f"{failed[0].code}\n{failed[0].out[-3000:]}\n{failed[0].err[-3000:]}"
            )
        return ran

    def start(
        self, name: str, key: str, cwd: Path | None = None, rewrite: Rewrite | None = None
    ) -> subprocess.Popen[bytes]:
        proc = start_block(
            self.block(name), cwd or self.work, self.env, self.log(key), rewrite or self.rewrite
        )
        self.processes[key] = proc
        return proc

    def log(self, key: str) -> Path:
        return self.root / f"{key}.log"

    def log_text(self, key: str) -> str:
        path = self.log(key)
        return path.read_text(errors="replace") if path.exists() else ""

    def write_guide_file(self, name: str, dest: Path, extra: str = "") -> Path:
        dest.write_text(self.rewrite(self.block(name).text) + extra)
        return dest

    # -- the broker, started by the guide's `mosquitto -c ... -d` ------------------------------

    def broker_pids(self) -> list[int]:
        """The daemons running on this fleet's broker config (found by its unique path)."""
        wanted = str(self.broker_config).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if wanted in args and Path(args[0].decode(errors="replace")).name == "mosquitto":
                pids.append(int(entry.name))
        return pids

    def start_broker(self) -> None:
        self.run("broker-start")
        wait_for(
            lambda: listening(self.devices_port) and listening(self.cloud_port),
            30,
            "the broker listening on both ports",
        )

    def stop_broker(self) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages, and exits."""
        pids = self.broker_pids()
        assert pids, "no broker runs on the fleet's config"
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not self.broker_pids(), 30, "the broker to exit")

    def logs_in(self, user: str, password: str) -> bool:
        """Whether the devices listener accepts `user` (a device id) with `password`."""
        answer: list[bool] = []
        done = threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
            answer.append(not reason_code.is_failure)
            done.set()

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(user, password)
        client.on_connect = on_connect
        client.connect("127.0.0.1", self.devices_port)
        client.loop_start()
        try:
            assert done.wait(30), f"no CONNACK for {user}"
        finally:
            client.disconnect()
            client.loop_stop()
        return answer[0]

    # -- devices -------------------------------------------------------------------------------

    def device_dir(self, device_id: str) -> Path:
        return self.root / "devices" / device_id

    def agent_rewrite(self, device_id: str) -> Rewrite:
        return self.rewrite.also({"/etc/litefleet": f"{self.device_dir(device_id)}/etc/litefleet"})

    def agent_config(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "etc" / "litefleet" / "agent.toml"

    def state_dir(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "var" / "lib" / "litefleet"

    def write_agent_config(
        self, device_id: str, profile: str, initial: Path, trusted_key: str
    ) -> Path:
        """examples/agent.toml as install.md has the reader edit it: id, profile, broker login,
        model, source, trusted key; state dir and telemetry interval short for the test."""
        password = self.root / "etc" / "litefleet-cloud" / "passwords" / f"{device_id}.password"
        edits = {
            'device_id = "cam-01"': f'device_id = "{device_id}"',
            'profile = "x86-gateway"': f'profile = "{profile}"',
            'state_dir = "/var/lib/litefleet"': f'state_dir = "{self.state_dir(device_id)}"',
            "port = 1883": f"port = {self.devices_port}\nreconnect_max_s = 2.0",
            '# username = "cam-01"': f'username = "{device_id}"',
            '# password_file = "/etc/litefleet/mqtt.password"': f'password_file = "{password}"',
            'initial = "models/digits.tflite"': f'initial = "{initial}"',
            "0" * 64: trusted_key,
            "interval_s = 10": "interval_s = 0.5",
        }
        text = EXAMPLE_AGENT.read_text()
        for old, new in edits.items():
            assert text.count(old) >= 1, f"examples/agent.toml has no {old!r}"
            text = text.replace(old, new, 1)
        config = self.agent_config(device_id)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
        return config

    def start_agent(self, device_id: str) -> subprocess.Popen[bytes]:
        return self.start("agent-run", device_id, rewrite=self.agent_rewrite(device_id))

    def last_seq(self, device_id: str) -> int:
        """The highest seq the agent has given a record (its outbox's counter)."""
        path = self.state_dir(device_id) / "agent.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(str(path), timeout=10)
        try:
            row = conn.execute("SELECT value FROM outbox_meta WHERE key = 'last_seq'").fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()
        return int(row[0]) if row else 0

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            for proc in reversed(list(self.processes.values())):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        finally:
            for pid in self.broker_pids():
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not self.broker_pids(), 30, "the broker to exit")
            shutil.rmtree(self.root, ignore_errors=True)
