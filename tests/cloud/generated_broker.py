"""A real mosquitto started from what `litefleet broker-config` wrote, exactly as written.

`generated_broker(tmp_path_factory-like folder, devices)` runs the command (in a folder the
broker's user can reach: pytest's own tmp folders are closed to others), starts
`mosquitto -c DIR/mosquitto.conf` and returns a `GeneratedBroker` with the passwords, the
password files and both ports. As root, mosquitto drops to the `mosquitto` user, so the test
also shows that the files are readable by it. `cloud_toml()` gives the `[mqtt]` part of a
cloud.toml with per-role credentials; `agent_mqtt(device)` the lines of an agent's `[mqtt]`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path

from cloud.cli import main
from cloud.config import CloudRole
from tests.conftest import Mosquitto, free_port, mosquitto_binary


class GeneratedBroker(Mosquitto):
    """conftest's restartable `Mosquitto`, but on the generated config, unchanged."""

    def __init__(self, out: Path, result: dict[str, object]) -> None:
        self.result = result
        self.out = out
        super().__init__(out / "test-logs", port=int(str(result["port"])))
        self.config_path = Path(str(result["config"]))
        self.cloud_port = int(str(result["cloud_port"]))
        self.password_files: dict[str, str] = dict(result["password_files"])  # type: ignore[call-overload]

    def _write_config(self) -> None:  # the generated config is used as it is
        pass

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:  # mosquitto logs to stderr by default
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log()[-2000:]}")
            try:
                for port in (self.port, self.cloud_port):
                    socket.create_connection((self.host, port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} and {self.cloud_port}")

    def password(self, user: str) -> str:
        return Path(self.password_files[user]).read_text().strip()

    def cloud_toml(self) -> str:
        """Tables for a cloud.toml (its `[mqtt]` table must say port = self.cloud_port)."""
        return "".join(
            f'\n[mqtt.{role.value}]\nusername = "{role.default_user}"\n'
            f'password_file = "{self.password_files[role.default_user]}"\n'
            for role in CloudRole
        )

    def agent_mqtt(self, device_id: str) -> str:
        return f'username = "{device_id}"\npassword_file = "{self.password_files[device_id]}"\n'


@contextmanager
def generated_broker(devices: list[str], *extra_args: str) -> Iterator[GeneratedBroker]:
    """broker-config for `devices` on free loopback ports, mosquitto started from it; killed
    and its folder removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="litefleet-broker-", dir="/tmp"))
    root.chmod(0o755)
    broker: GeneratedBroker | None = None
    try:
        out = StringIO()
        with redirect_stdout(out):
            code = main(
                [
                    "broker-config",
                    "--out",
                    str(root / "broker"),
                    "--devices",
                    *devices,
                    "--port",
                    str(free_port()),
                    "--listen",
                    "127.0.0.1",
                    "--cloud-port",
                    str(free_port()),
                    "--password-dir",
                    str(root / "passwords"),
                    "--json",
                    *extra_args,
                ]
            )
        assert code == 0, out.getvalue()
        broker = GeneratedBroker(root / "broker", json.loads(out.getvalue()))
        broker.start()
        yield broker
    finally:
        if broker is not None:
            broker.kill()
        shutil.rmtree(root, ignore_errors=True)
