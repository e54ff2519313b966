"""What a running agent has not needed yet, it has not imported (resident memory at start).

A real sensor agent (vibration model, synthetic samples, real broker) runs until it has
delivered inferences; at exit it reports which of the lazily imported libraries it loaded.
`cryptography` (about 8 MB resident) loads when the first signature is checked, not before: the
positive control checks a real signature in a fresh interpreter and sees it load then.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"
LAZY = ("cryptography",)

LAUNCHER = f"""
import atexit, sys
atexit.register(lambda: print("LOADED", sorted(m for m in {LAZY!r} if m in sys.modules),
                              flush=True))
from agent.cli import main
sys.exit(main(sys.argv[1:]))
"""

CONFIG = """
device_id = "dev-1"
profile = "x86-gateway"
state_dir = "{state}"
log_format = "text"
[mqtt]
host = "{host}"
port = {port}
[model]
name = "vibration"
initial = "{model}"
[source]
uri = "synthetic:sensor?rate=2000"
[trust]
keys = ["{key}"]
[telemetry]
interval_s = 0.5
"""

POSITIVE_CONTROL = """
import sys
from shared.keys import SigningKey, PublicKey
before = "cryptography" in sys.modules
public = PublicKey(bytes(32))  # building keys and keyrings does not load it either
assert "cryptography" not in sys.modules
key = SigningKey.generate()
signature = key.sign(b"message")
print(before, key.public.verify(signature, b"message"), key.public.verify(signature, b"other"),
      "cryptography" in sys.modules)
"""


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_running_agent_loads_cryptography_only_to_check_a_signature(  # type: ignore[no-untyped-def]
    mosquitto, mqtt_subscriber, tmp_path: Path
) -> None:
    sub = mqtt_subscriber(mosquitto, ["litefleet/v1/devices/dev-1/telemetry"])
    config = tmp_path / "agent.toml"
    config.write_text(
        CONFIG.format(
            state=tmp_path / "state",
            host=mosquitto.host,
            port=mosquitto.port,
            model=MODELS / "vibration.tflite",
            key="ab" * 32,
        )
    )
    proc = run_python(LAUNCHER, "run", "--config", str(config))
    try:
        delivered = sub.wait_for(
            lambda msgs: any(json.loads(m.payload).get("inferences", 0) > 0 for m in msgs),
            timeout=60,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert delivered, out
    assert proc.returncode == 0, out
    assert "LOADED []" in out

    control = run_python(POSITIVE_CONTROL)
    out, _ = control.communicate(timeout=60)
    assert control.returncode == 0, out
    assert out.split() == ["False", "True", "False", "True"]
