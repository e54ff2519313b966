"""Run one update in this process, as the daemon would; the crash tests kill it part-way.

    python crash_driver.py CONFIG DEPLOYMENT (offline | live | resume)

`offline` runs the pipeline with no loop (the `apply` path). `live` runs a real inference loop
on a synthetic source, attaches the updater, and ticks until probation settles. `resume` is a
restart after a crash: recover, run the loop, attach (which resumes an interrupted
probation), and tick until probation settles, without a new deployment.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from agent.config import load_config
from agent.loop import build_loop
from agent.outbox import Outbox
from agent.runtime import load_model
from agent.store import open_store
from agent.update import Updater


def main(config_path: str, deployment: str, mode: str) -> int:
    config = load_config(Path(config_path))
    db = open_store(config.state_dir)
    outbox = Outbox(db, config.outbox)
    updater = Updater(config, db, outbox, lambda: None)
    path = updater.recover()
    data = Path(deployment).read_bytes()
    if mode == "offline":
        outcome = updater.handle_deployment(data)
        print(outcome.phase)
        return 0
    stop = threading.Event()
    loop = build_loop(config, load_model(path), stop)
    loop.start()
    updater.attach(loop)
    outcome = updater.handle_deployment(data) if mode == "live" else None
    deadline = time.monotonic() + 60
    while updater.probation_active() and time.monotonic() < deadline:
        updater.tick()
        time.sleep(0.01)
    print(outcome.phase if outcome else "-", updater.phase())
    loop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
