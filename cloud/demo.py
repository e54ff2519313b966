"""`make demo`: the whole LiteFleet story on one machine, as separate processes.

    broker (mosquitto, or the embedded amqtt broker)  ─┐
    litefleet serve (ingest, rollouts, artifact HTTP) ─┼─ all on 127.0.0.1
    litefleet-agent run  x3 (two cameras, one sensor) ─┘

Then, with the one-shot operator commands: compress the sample model, release it as version 1
and roll it out (a full download); compress the fine-tuned sample, release it as version 2 (a
delta from version 1) in two waves; release a deliberately bad version 3 that loads but
disagrees with its predecessor, and watch it roll back by itself and pause its rollout.

Everything lives in `.demo/` (logs in `.demo/logs/`); every process started here is stopped
at the end, on Ctrl-C too. The summary is printed and written to `.demo/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MODEL_NAME = "digits"
CAMERAS = {"cam-lobby": "x86-gateway", "cam-dock": "rpi5"}
SENSOR = ("vib-pump", "rpi4")
TIMEOUT_S = 90.0


class DemoFailed(Exception):
    """A step of the story did not happen; the message says which and where to look."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


@dataclass
class Processes:
    """Long-running children, each in its own process group, stopped in reverse order."""

    logs: Path
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        log.close()
        self.children.append((name, proc))

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise DemoFailed(
                    f"{name} exited with {proc.returncode}; see {self.logs}/{name}.log"
                )

    def stop_all(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for _name, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.children.clear()


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DemoFailed(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


class Demo:
    def __init__(self, work: Path, with_training: bool, broker: str = "auto") -> None:
        self.work = work
        self.broker = broker
        self.with_training = with_training
        self.logs = work / "logs"
        self.procs = Processes(self.logs)
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.protocol = "5"
        self.cloud_config = work / "cloud.toml"
        self.timings: dict[str, float] = {}

    # ---- commands -------------------------------------------------------------------------
    def litefleet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "cloud.cli", *args]
        if args and args[0] not in ("keys", "broker-config", "compress"):
            argv += ["--config", str(self.cloud_config)]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
        if check and result.returncode != 0:
            raise DemoFailed(
                f"`litefleet {' '.join(args)}` exited {result.returncode}:\n{result.stderr[-2000:]}"
            )
        return result

    def litefleet_json(self, *args: str) -> Any:
        return json.loads(self.litefleet(*args, "--json").stdout)

    # ---- set-up ---------------------------------------------------------------------------
    def start_broker(self) -> None:
        binary = mosquitto_binary() if self.broker != "amqtt" else None
        if self.broker == "mosquitto" and binary is None:
            raise DemoFailed("mosquitto is not installed (apt-get install mosquitto)")
        broker_dir = self.work / "broker"
        broker_dir.mkdir()
        if binary:
            conf = broker_dir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence true\npersistence_location {broker_dir}/\nlog_dest stdout\n"
            )
            self.procs.start("broker", [binary, "-c", str(conf)])
            print(f"broker: mosquitto on 127.0.0.1:{self.mqtt_port}")
        else:
            self.protocol = "3.1.1"  # amqtt speaks MQTT 3.1.1
            conf = broker_dir / "amqtt.yaml"
            conf.write_text(
                "listeners:\n  default:\n    type: tcp\n"
                f"    bind: 127.0.0.1:{self.mqtt_port}\n"
                "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                "    allow_anonymous: true\n"
            )
            amqtt = Path(sys.executable).parent / "amqtt"
            self.procs.start("broker", [str(amqtt), "-c", str(conf)])
            why = "asked for" if self.broker == "amqtt" else "mosquitto not installed"
            print(f"broker: {why}: embedded amqtt on 127.0.0.1:{self.mqtt_port}")
        wait_for_port(self.mqtt_port)

    def write_cloud_config(self) -> None:
        self.litefleet("keys", "generate", "--dir", str(self.work / "keys"))
        self.public_key = (self.work / "keys" / "release.pub").read_text().strip()
        self.cloud_config.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.mqtt_port}\nprotocol = "{self.protocol}"\n\n'
            f'[store]\ndb = "{self.work}/cloud/cloud.db"\n'
            f'artifacts = "file://{self.work}/cloud/artifacts"\n'
            f'public_url = "http://127.0.0.1:{self.http_port}/artifacts"\n\n'
            f'[signing]\nkey = "{self.work}/keys/release.key"\n\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n\n'
            "[web]\nenabled = false\n\n"
            "[rollout]\ntick_s = 1\n"
        )

    def write_agent_config(self, device_id: str, profile: str, model: Path, source: str) -> Path:
        state = self.work / "devices" / device_id
        state.mkdir(parents=True)
        labels = model.with_suffix(".labels.txt")
        config = state.parent / f"{device_id}.toml"
        config.write_text(
            f'device_id = "{device_id}"\nprofile = "{profile}"\nstate_dir = "{state}"\n'
            'log_format = "text"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.mqtt_port}\nprotocol = "{self.protocol}"\n'
            "reconnect_max_s = 5\n\n"
            f'[model]\nname = "{model.stem}"\ninitial = "{model}"\nlabels = "{labels}"\n\n'
            f'[source]\nuri = "{source}"\nloop = true\n\n'
            f'[trust]\nkeys = ["{self.public_key}"]\nthreshold = 1\n\n'
            "[telemetry]\ninterval_s = 2\nheartbeat_s = 5\n"
        )
        return config

    def start_fleet(self) -> None:
        video = self.work / "digits.avi"
        subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "make_digits_video.py"),
                "--out",
                str(video),
                "--frames",
                "300",
                "--fps",
                "30",
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=120,
        )
        self.procs.start(
            "serve",
            [sys.executable, "-m", "cloud.cli", "serve", "--config", str(self.cloud_config)],
        )
        wait_for_port(self.http_port)
        for device_id, profile in CAMERAS.items():
            config = self.write_agent_config(
                device_id, profile, EXAMPLES / "models" / "digits.tflite", f"file://{video}?fps=15"
            )
            self.procs.start(
                device_id, [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
            )
        sensor_id, sensor_profile = SENSOR
        config = self.write_agent_config(
            sensor_id,
            sensor_profile,
            EXAMPLES / "models" / "vibration.tflite",
            "synthetic:sensor?rate=640",
        )
        self.procs.start(
            sensor_id, [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        )
        self.wait("three devices online and reporting telemetry", lambda: self.reporting() >= 3)
        self.show_fleet()

    # ---- observing ------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.litefleet_json("devices")
        return result

    def reporting(self) -> int:
        return sum(1 for d in self.devices() if d.get("online") and d.get("fps"))

    def show_fleet(self) -> None:
        rows = self.devices()
        print(
            f"  {'device':<10} {'profile':<12} {'model':<12} {'ver':>3} {'fps':>6} "
            f"{'p95 ms':>7}  {'update':<12} online"
        )
        for d in sorted(rows, key=lambda r: r["device_id"]):
            model = d.get("model") or {}
            print(
                f"  {d['device_id']:<10} {d.get('profile', ''):<12} {model.get('name', ''):<12} "
                f"{model.get('version', ''):>3} {d.get('fps') or 0:>6.1f} "
                f"{d.get('p95_ms') or 0:>7.2f}  {d.get('update_phase', ''):<12} "
                f"{'yes' if d.get('online') else 'no'}",
                flush=True,
            )

    def wait(self, what: str, done: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
        start = time.monotonic()
        last_table = start
        while not done():
            self.procs.check_alive()
            now = time.monotonic()
            if now - start > timeout:
                raise DemoFailed(
                    f"timed out after {timeout:.0f} s waiting for: {what}; logs in {self.logs}"
                )
            if now - last_table > 6:
                self.show_fleet()
                last_table = now
            time.sleep(0.5)
        print(f"  ok: {what} ({time.monotonic() - start:.1f} s)", flush=True)

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        result: list[dict[str, Any]] = self.litefleet_json("rollouts", rollout_id)
        return result[0]

    def last_outcome(self, device_id: str, version: int) -> str:
        """The outcome the device reported for `version` of the model ('committed', ...)."""
        for rollout in self.litefleet_json("rollouts"):
            if rollout["release"] == f"{MODEL_NAME}@{version}":
                failed = {f["device_id"]: f["reason"] for f in rollout["failures"]}
                return str(
                    failed.get(
                        device_id,
                        "committed" if rollout["state"] == "completed" else rollout["state"],
                    )
                )
        return "unknown"

    def camera_versions(self) -> dict[str, int]:
        return {
            d["device_id"]: (d.get("model") or {}).get("version", -1)
            for d in self.devices()
            if d["device_id"] in CAMERAS
        }

    # ---- the story ------------------------------------------------------------------------
    def compress(self, model: Path, profile: str, out: Path) -> Path:
        source = model.with_suffix(".keras") if self.with_training else model
        methods = "int8,prune,distill" if self.with_training else "dynamic_int8,float16"
        report = self.litefleet_json(
            "compress",
            str(source),
            "--profile",
            profile,
            "--data",
            str(EXAMPLES / "data" / "digits-train.npz"),
            "--eval",
            str(EXAMPLES / "data" / "digits-eval.npz"),
            "--methods",
            methods,
            "--out",
            str(out),
        )
        chosen = next(c for c in report["candidates"] if c["method"] == report["chosen"])
        base = report["baseline"]
        print(
            f"  {profile}: chose {report['chosen']}: {chosen['bytes']} bytes "
            f"(baseline {base['bytes']}), accuracy {chosen.get('accuracy')} "
            f"(baseline {base.get('accuracy')}): {report['reason']}"
        )
        return out / "report.json"

    def release(self, model: Path, version: int, profile: str, *extra: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.litefleet_json(
            "release",
            str(model),
            "--name",
            MODEL_NAME,
            "--version",
            str(version),
            "--profile",
            profile,
            *extra,
        )
        return doc

    def release_for_cameras(
        self, version: int, model: Path | None, compress_from: Path | None, *extra: str
    ) -> dict[str, dict[str, Any]]:
        releases = {}
        for device_id, profile in CAMERAS.items():
            if compress_from is not None:
                out = self.work / "compress" / f"v{version}-{profile}"
                report_path = self.compress(compress_from, profile, out)
                report = json.loads(report_path.read_text())
                chosen = next(c for c in report["candidates"] if c["method"] == report["chosen"])
                candidate = Path(chosen["path"])
                if not candidate.is_absolute():
                    candidate = out / candidate
                releases[device_id] = self.release(
                    candidate, version, profile, "--from-report", str(report_path), *extra
                )
            else:
                assert model is not None
                releases[device_id] = self.release(model, version, profile, *extra)
            rel = releases[device_id]
            deltas = rel.get("deltas") or []
            print(
                f"  released {MODEL_NAME}@{version} for {profile}: full "
                f"{rel['artifact']['size']} bytes, {len(deltas)} delta(s) "
                f"{[d['size'] for d in deltas]}"
            )
        return releases

    def deploy(self, version: int, waves: str, extra: tuple[str, ...] = ()) -> str:
        result = self.litefleet_json(
            "deploy", f"{MODEL_NAME}@{version}", "--device", *CAMERAS, "--waves", waves, *extra
        )
        rollout_id: str = result["id"] if isinstance(result, dict) else result[0]["id"]
        print(
            f"  rollout {rollout_id}: {MODEL_NAME}@{version} to {', '.join(CAMERAS)} "
            f"in waves {waves}"
        )
        return rollout_id

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        say("1. broker, cloud, and three devices")
        self.start_broker()
        self.write_cloud_config()
        self.start_fleet()

        say("2. compress the sample model and roll it out as version 1 (full download)")
        self.release_for_cameras(1, None, EXAMPLES / "models" / "digits.tflite")
        r1 = self.deploy(1, "100%")
        self.wait(
            "version 1 committed on both cameras",
            lambda: (
                self.rollout(r1)["state"] == "completed"
                and all(v == 1 for v in self.camera_versions().values())
            ),
        )
        self.show_fleet()

        say("3. compress the fine-tuned model; version 2 travels as a delta, in two waves")
        v2 = self.release_for_cameras(2, None, EXAMPLES / "models" / "digits-ft.tflite")
        r2 = self.deploy(2, "1,100%")
        self.wait(
            "version 2 committed on both cameras",
            lambda: (
                self.rollout(r2)["state"] == "completed"
                and all(v == 2 for v in self.camera_versions().values())
            ),
        )
        self.show_fleet()

        say("4. a bad version 3: it loads, but disagrees with version 2 on probation")
        bad = EXAMPLES / "models" / "digits-bad.tflite"
        self.release_for_cameras(3, bad, None, "--min-agreement", "90", "--min-inferences", "30")
        r3 = self.deploy(3, "1,100%", ("--max-failures", "0%"))
        self.wait(
            "version 3 rolled back and its rollout paused",
            lambda: self.rollout(r3)["state"] == "paused",
        )
        rollout3 = self.rollout(r3)
        self.wait(
            "cameras serving version 2 again",
            lambda: all(v == 2 for v in self.camera_versions().values()),
        )
        self.show_fleet()

        say("5. summary")
        telemetry = self.litefleet_json("telemetry", "--since", "1h")
        reason = "; ".join(
            f"{f['device_id']}: {f['reason']} ({f['detail']})" for f in rollout3["failures"]
        )
        full_bytes = sum(r["artifact"]["size"] for r in v2.values())
        delta_bytes = sum(min(d["size"] for d in r["deltas"]) for r in v2.values() if r["deltas"])
        summary = {
            "devices": {
                d: {"version": v, "state": self.last_outcome(d, 2)}
                for d, v in self.camera_versions().items()
            },
            "good_release": 2,
            "bad_release": 3,
            "rolled_back": {"version": 3, "reason": reason},
            "telemetry_records": len(telemetry),
            "delta_bytes": delta_bytes,
            "full_bytes": full_bytes,
            "seconds": round(time.monotonic() - started, 1),
        }
        return summary


def print_summary(summary: dict[str, Any]) -> None:
    print()
    for device_id, info in summary["devices"].items():
        print(f"  {device_id}: runs {MODEL_NAME} version {info['version']} ({info['state']})")
    print(
        f"  good release: version {summary['good_release']}; bad release: version "
        f"{summary['bad_release']}, rolled back: {summary['rolled_back']['reason']}"
    )
    print(
        f"  version 2 travelled as {summary['delta_bytes']} bytes of delta instead of "
        f"{summary['full_bytes']} bytes of full artifact"
    )
    print(f"  telemetry records stored: {summary['telemetry_records']}")
    print(f"  the story took {summary['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".demo", help="working folder")
    parser.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="auto: mosquitto when installed, else the embedded amqtt broker",
    )
    parser.add_argument(
        "--with-training",
        action="store_true",
        help="compress from the Keras model with TensorFlow (the [train] extra)",
    )
    args = parser.parse_args(argv)
    work: Path = args.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    demo = Demo(work, args.with_training, args.broker)

    def interrupted(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        summary = demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the demo started", file=sys.stderr)
        return 130
    except DemoFailed as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    finally:
        demo.procs.stop_all()
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    print(f"\n  written to {work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
