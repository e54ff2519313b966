"""`litefleet serve` and the dashboard's address: a taken port is one clear line, not a hang."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.cloud.conftest import REPO, CloudEnv


def test_serve_says_so_when_the_dashboard_port_is_taken(cloud_env: CloudEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = cloud_env.config.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'
        )
        cloud_env.config.write_text(config)
        done = subprocess.run(
            [sys.executable, "-m", "cloud.cli", "serve", "--config", str(cloud_env.config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert done.returncode == 4
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the dashboard could not listen on 127.0.0.1:{port} (in use? see [web] listen)"
    )
    assert "Traceback" not in done.stderr
