"""Memory, CPU and install size of two running agents: a camera agent and a sensor agent.

Prints one JSON line. Runs from a fresh clone, on loopback only:

- a camera agent (`litefleet-agent run`, sample digits model) reading a 640x480 MJPEG stream at
  15 fps from an HTTP server this script serves (frames drawn as examples/make_digits_video.py
  draws them);
- a sensor agent (sample vibration model) on `synthetic:sensor?rate=100`;
- both publishing to a mosquitto started here when one is installed, otherwise to a port where
  nothing listens (the outbox buffers on disk, as on a device that is offline).

Each agent's RSS and PSS (/proc/PID/smaps_rollup) at 1 minute and at the end and the growth
between them, the anonymous part of RSS at the end (the rest is mapped files: libraries, shared
and reclaimable), and its average CPU (% of one core) from 1 minute to the end. Unless
`--no-venvs`, a sensor venv (`.`) and a camera venv (`.[camera]`) are built in a temporary
folder first, as `litefleet-agent install` builds them (no pip inside; pip's cache makes a
second run quick), their sizes reported, and each agent runs from its own venv, as installed on
a device (their files evicted from the page cache, as the installer does); with `--no-venvs`
both run with this Python and the checkout. `--malloc-arena-max N` sets MALLOC_ARENA_MAX for the
agents (it made no difference here: glibc's default is kept).

    python benchmarks/agent_footprint.py                # 10 minutes
    python benchmarks/agent_footprint.py --quick        # 1 minute, no venvs: to try it out
    python benchmarks/agent_footprint.py --minutes 3 --no-venvs
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # make_digits_video's drawing
sys.path.insert(0, str(ROOT))  # the installer's VenvPlan, run from a fresh clone

FPS = 15
SENSOR_HZ = 100
BOUNDARY = "frame"

CONFIG = """
device_id = "{device}"
profile = "x86-gateway"
state_dir = "{state}"
log_format = "text"
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min_s = 1.0
reconnect_max_s = 30.0
[model]
name = "{model}"
initial = "{model_path}"
[source]
uri = "{uri}"
[trust]
keys = ["{key}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg_frames(count: int = 60) -> list[bytes]:
    """640x480 digits frames as JPEG, drawn like the sample video."""
    import cv2
    import numpy as np
    from make_digits_video import render

    with np.load(ROOT / "examples" / "data" / "digits-eval.npz") as npz:
        xs, ys = npz["x"], npz["y"]
    frames = []
    for i in range(count):
        ok, data = cv2.imencode(".jpg", render(xs[i % len(ys)], int(ys[i % len(ys)])))
        assert ok
        frames.append(data.tobytes())
    return frames


class MjpegServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, frames: list[bytes], fps: int) -> None:
        self.frames, self.fps = frames, fps
        super().__init__(("127.0.0.1", 0), _MjpegHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stream.mjpg"


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    server: MjpegServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.end_headers()
        period = 1.0 / self.server.fps
        due = time.monotonic()
        i = 0
        try:
            while True:
                frame = self.server.frames[i % len(self.server.frames)]
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(frame)}\r\n\r\n".encode()
                    + frame
                    + b"\r\n"
                )
                i += 1
                due += period
                time.sleep(max(0.0, due - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            pass


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes] | None, int]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    port = free_port()
    if binary is None:
        return None, port  # nothing listens: the agents' outboxes buffer
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port


def start_agent(
    tmp: Path, name: str, model: str, uri: str, port: int, python: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    folder = tmp / name
    folder.mkdir()
    config = folder / "agent.toml"
    config.write_text(
        CONFIG.format(
            device=name,
            state=folder / "state",
            port=port,
            model=model,
            model_path=ROOT / "examples" / "models" / f"{model}.tflite",
            uri=uri,
            key="ab" * 32,
        )
    )
    log = (folder / "agent.log").open("wb")
    return subprocess.Popen(
        [python, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
        env=env,
    )


def memory_mb(pid: int) -> dict[str, float]:
    """Rss, Pss and the anonymous part of Rss from /proc/PID/smaps_rollup, in MB."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            figures[key[:4].lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return figures


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_venv(tmp: Path, extra: str) -> tuple[float, str]:
    """A venv with `.[extra]` (from a copy of the tree), built as `litefleet-agent install`
    builds it: without pip of its own, filled by this Python's pip. (its MB, its python)."""
    from agent.installer.venv import VenvPlan, evict_page_cache

    src = tmp / "src"
    if not src.exists():
        shutil.copytree(
            ROOT,
            src,
            ignore=shutil.ignore_patterns(
                ".git", ".venv*", ".demo", "build", "*.egg-info", "__pycache__", ".bench-models"
            ),
        )
    venv = tmp / f"venv-{extra or 'base'}"
    plan = VenvPlan(venv, str(venv), src, sys.executable, ("--quiet",), (extra,) if extra else ())
    subprocess.run(plan.create_command(), check=True)
    subprocess.run(plan.install_command(), check=True)
    total = sum(p.lstat().st_size for p in venv.rglob("*") if p.is_file() or p.is_symlink())
    evict_page_cache(venv)  # as the installer does: see there
    return round(total / 1e6, 1), str(plan.bin_python)


def measure(minutes: float, first: float, venvs: bool, arenas: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "minutes": minutes,
        "first_sample_min": round(first, 2),
        "malloc_arena_max": arenas or "default",
    }
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MALLOC_ARENA_MAX")}
    if arenas:
        env["MALLOC_ARENA_MAX"] = str(arenas)
    with tempfile.TemporaryDirectory(prefix="litefleet-footprint-") as name:
        tmp = Path(name)
        pythons = {"sensor": sys.executable, "camera": sys.executable}
        if venvs:
            result["venv_sensor_mb"], pythons["sensor"] = build_venv(tmp, "")
            result["venv_camera_mb"], pythons["camera"] = build_venv(tmp, "camera")
        else:
            env["PYTHONPATH"] = str(ROOT)
        result["agents_from"] = "venvs" if venvs else "checkout"
        server = MjpegServer(jpeg_frames(), FPS)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        broker, port = start_broker(tmp)
        result["broker"] = "mosquitto" if broker is not None else "unreachable (outbox buffers)"
        agents = {
            "camera": start_agent(
                tmp, "camera", "digits", server.url, port, pythons["camera"], env
            ),
            "sensor": start_agent(
                tmp,
                "sensor",
                "vibration",
                f"synthetic:sensor?rate={SENSOR_HZ}",
                port,
                pythons["sensor"],
                env,
            ),
        }
        try:
            time.sleep(first * 60)
            at_first = {
                k: (memory_mb(p.pid), cpu_seconds(p.pid), time.monotonic())
                for k, p in agents.items()
            }
            time.sleep((minutes - first) * 60)
            for key, proc in agents.items():
                if proc.poll() is not None:
                    raise SystemExit(
                        f"the {key} agent exited with {proc.returncode}: see "
                        f"{tmp / key / 'agent.log'}"
                    )
                mem0, cpu0, t0 = at_first[key]
                mem1 = memory_mb(proc.pid)
                cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
                result[key] = {
                    "rss_first_mb": mem0["rss_mb"],
                    "pss_first_mb": mem0["pss_mb"],
                    "rss_end_mb": mem1["rss_mb"],
                    "pss_end_mb": mem1["pss_mb"],
                    "anon_end_mb": mem1["anon_mb"],
                    "growth_mb": round(mem1["rss_mb"] - mem0["rss_mb"], 1),
                    "cpu_percent": round(cpu, 1),
                }
        finally:
            for proc in agents.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in agents.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if broker is not None:
                broker.terminate()
                broker.wait(10)
            server.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the agents run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 minute, first sample at 20 s, no venvs (to try the script)",
    )
    parser.add_argument(
        "--no-venvs",
        action="store_true",
        help="skip the install sizes; run the agents from this checkout",
    )
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        default=0,
        help="MALLOC_ARENA_MAX for the agents (0: glibc's default)",
    )
    args = parser.parse_args()
    minutes, first, venvs = args.minutes, min(1.0, args.minutes / 2), not args.no_venvs
    if args.quick:
        minutes, first, venvs = 1.0, 1 / 3, False
    print(json.dumps(measure(minutes, first, venvs, args.malloc_arena_max)))


if __name__ == "__main__":
    main()
