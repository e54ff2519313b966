"""docs/operator-guide.md as a test: its marked blocks are read by tests/e2e/guide.py.

Every marked command is one the real CLIs accept as written (their own argument parsers, so an
option renamed in the code fails here), and the whole story runs block by block, as written,
with real parts (tests/e2e/guide_fleet.py has the machine it runs on and the complete list of
substitutions: paths under /etc and /var/lib into a temporary folder, ports 1883, 1884 and 8080
to free ones): the release keys, `broker-config` and mosquitto started from its output (as
root: the broker drops to its own user), the guide's cloud.toml checked and served, two agents
(rpi5 and x86-gateway, examples/agent.toml edited as install.md says) on the sample digits
model and a paced synthetic source, one of them first started on a file that is no model and
fixed by editing its config, a broker restart while they run, `compress` with its default
choice per profile, `release --from-report` per profile and `deploy --wait` to committed on
both; then every record each agent produced is in the cloud store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from localio.cli import build_parser
from tests.cloud.conftest import DIGITS, write_config
from tests.e2e.guide import GUIDE, INSTALL, Ran, argv, guide_blocks, run_block
from tests.e2e.guide_fleet import GuideFleet, wait_for

REPO = Path(__file__).resolve().parents[2]


def parser_for(program: str):  # type: ignore[no-untyped-def]
    if program == "litefleet":
        from cloud import commands
        from cloud.cli import DESCRIPTION
    else:
        from agent import commands  # type: ignore[no-redef]
        from agent.cli import DESCRIPTION  # type: ignore[no-redef]
    return build_parser(program, DESCRIPTION, commands)


def test_the_guide_marks_its_blocks() -> None:
    blocks = guide_blocks(GUIDE.read_text())
    names = [b.name for b in blocks]
    assert len(names) == len(set(names))
    assert {
        "cloud.toml",
        "keys",
        "broker-config",
        "broker-start",
        "broker-reload",
        "check-config",
        "serve",
        "health",
        "groups",
        "push",
        "watch",
    } <= set(names)
    assert all(b.commands for b in blocks if b.lang == "sh")
    install = [b.name for b in guide_blocks(INSTALL.read_text())]
    assert {"agent-check", "agent-run"} <= set(install) and not set(install) & set(names)


def test_every_guide_command_is_accepted_as_written(capsys) -> None:
    checked = 0
    for doc, block in [(d, b) for d in (GUIDE, INSTALL) for b in guide_blocks(d.read_text())]:
        for command in block.commands:
            words = argv(command)
            if words[0] not in ("litefleet", "litefleet-agent"):
                continue
            try:
                parser_for(words[0]).parse_args(words[1:])
            except SystemExit as e:
                pytest.fail(
                    f"{doc.name} line {block.line} ({block.name}): {command!r} is "
                    f"refused: {capsys.readouterr().err.strip()} (exit {e.code})"
                )
            checked += 1
    assert checked >= 8


def test_the_harness_runs_a_block_as_a_reader_pastes_it(tmp_path: Path) -> None:
    write_config(tmp_path)
    text = """
<!-- guide-test: sample -->
```sh
litefleet --version
litefleet releases --json \\
    --config cloud.toml          # an empty store: no release yet
litefleet releases --name x      # not an option: the run stops here
litefleet devices
```
"""
    (block,) = guide_blocks(text)
    assert (
        block.commands[1] == "litefleet releases --json --config cloud.toml          "
        "# an empty store: no release yet"
    )
    bin_dir = Path(sys.executable).parent  # the venv's litefleet scripts
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    ran = run_block(block, tmp_path, env)
    assert [r.code for r in ran] == [0, 0, 2]
    assert ran[0].out.strip() == "litefleet 0.1.0" and ran[1].out.strip() == "[]"
    assert "unrecognized arguments: --name" in ran[2].err


# -- the story, block by block ------------------------------------------------------------------

DEVICES = {"cam-01": "rpi5", "cam-02": "x86-gateway"}
# Test pace, appended to the guide's cloud.toml: rollouts move on every second, not every 5 s.
CLOUD_TUNING = "\n[rollout]\ntick_s = 1\n\n[ingest]\nbatch_wait_s = 0.05\n"


@pytest.fixture
def fleet() -> Iterator[GuideFleet]:
    made = GuideFleet()
    try:
        yield made
    finally:
        made.close()


def store(fleet: GuideFleet) -> sqlite3.Connection:
    db = fleet.root / "var" / "lib" / "litefleet-cloud" / "cloud.db"
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def stored_seqs(fleet: GuideFleet, device_id: str) -> set[int]:
    """The device's seqs in the cloud store: telemetry, events and update reports share them."""
    conn = store(fleet)
    try:
        return {
            int(r[0])
            for table in ("telemetry", "events", "updates")
            for r in conn.execute(f"SELECT seq FROM {table} WHERE device_id = ?", (device_id,))
        }
    except sqlite3.OperationalError:  # serve has not made its tables yet
        return set()
    finally:
        conn.close()


def device_row(fleet: GuideFleet, device_id: str) -> tuple[object, ...] | None:
    conn = store(fleet)
    try:
        return conn.execute(
            "SELECT online, profile, model_name, model_version, model_sha256 "
            "FROM devices WHERE device_id = ?",
            (device_id,),
        ).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def active_sha(fleet: GuideFleet, device_id: str) -> str | None:
    active = fleet.state_dir(device_id) / "models" / "digits" / "active"
    return hashlib.sha256(active.read_bytes()).hexdigest() if active.exists() else None


@pytest.mark.slow
def test_the_guide_runs_as_written(fleet: GuideFleet) -> None:
    work = fleet.work
    # The reader's own files: the model to compress and its data (the guide names them).
    shutil.copy(DIGITS, work / "digits.tflite")
    shutil.copy(REPO / "examples" / "data" / "digits-train.npz", work / "train.npz")
    shutil.copy(REPO / "examples" / "data" / "digits-eval.npz", work / "eval.npz")

    # 1. The cloud side: keys, broker-config, the broker on its output, cloud.toml, serve.
    fleet.run("keys")
    trusted = (fleet.root / "etc" / "litefleet-cloud" / "release.pub").read_text().strip()
    assert len(trusted) == 64
    (configured,) = fleet.run("broker-config")
    # what it prints for cloud.toml is what the guide's cloud.toml says
    printed = tomllib.loads(configured.out.split("in cloud.toml:", 1)[1])
    assert printed["mqtt"] == tomllib.loads(fleet.rewrite(fleet.block("cloud.toml").text))["mqtt"]
    fleet.start_broker()
    fleet.write_guide_file("cloud.toml", work / "cloud.toml", CLOUD_TUNING)
    (check,) = fleet.run("check-config")
    assert "warning" not in (check.out + check.err).lower(), check
    fleet.start("serve", "serve")
    health: list[Ran] = []

    def healthy() -> bool:
        health[:] = fleet.run("health", ok=False)
        if not health or health[0].code != 0:
            return False
        try:
            return bool(json.loads(health[0].out).get("status") == "ok")
        except ValueError:
            return False

    wait_for(healthy, 60, f"serve's /healthz to say ok (serve log: {fleet.log_text('serve')})")
    assert health[1].code == 0 and "litefleet_broker_connected 1" in health[1].out, health

    # 2. The devices. cam-02's initial model is a file that is not a model: the agent stops
    # with one line and makes nothing active; fixed in the config, it serves.
    not_a_model = fleet.root / "usr" / "share" / "litefleet" / "digits.tflite"
    not_a_model.parent.mkdir(parents=True)
    not_a_model.write_bytes(b"this is the labels file, copied by mistake\n" * 20)
    fleet.write_agent_config("cam-01", DEVICES["cam-01"], DIGITS, trusted)
    fleet.write_agent_config("cam-02", DEVICES["cam-02"], not_a_model, trusted)
    fleet.run("agent-check", cwd=fleet.agent_config("cam-01").parent)
    (refused,) = fleet.run("agent-check", cwd=fleet.agent_config("cam-02").parent, ok=False)
    assert refused.code == 2 and "does not load" in refused.out + refused.err, refused
    assert not re.search(r"\bvalid\b", refused.out + refused.err), refused
    cam01 = fleet.start_agent("cam-01")
    broken = fleet.start_agent("cam-02")
    assert broken.wait(60) == 2
    said = [
        line
        for line in fleet.log_text("cam-02").splitlines()
        if line.strip() and not line.startswith("---- ")
    ]
    assert len(said) == 1 and "initial" in said[0] and "fix the config" in said[0], said
    assert active_sha(fleet, "cam-02") is None  # nothing became active
    config = fleet.agent_config("cam-02")
    config.write_text(config.read_text().replace(str(not_a_model), str(DIGITS)))
    fleet.run("agent-check", cwd=config.parent)
    cam02 = fleet.start_agent("cam-02")
    fleet.run("groups")
    digits_sha = hashlib.sha256(DIGITS.read_bytes()).hexdigest()
    for device_id, profile in DEVICES.items():
        wait_for(
            lambda d=device_id: (
                (device_row(fleet, d) or (0,))[0] == 1 and len(stored_seqs(fleet, d)) >= 3
            ),
            90,
            f"{device_id} online with records in the store (log: "
            f"{fleet.log_text(device_id)[-2000:]})",
        )
        assert device_row(fleet, device_id) == (1, profile, "digits", 0, digits_sha)
        assert active_sha(fleet, device_id) == digits_sha  # the positive control of cam-02's

    # A third device later: its password is added, nobody else's changes, and the broker lets
    # it in once reloaded (refused before: the positive control of the reload).
    passwords = fleet.root / "etc" / "litefleet-cloud" / "passwords"
    kept = {f.name: f.read_bytes() for f in passwords.iterdir()}
    fleet.run("broker-add")
    cam03 = (passwords / "cam-03.password").read_text().strip()
    assert {f.name: f.read_bytes() for f in passwords.iterdir() if f.name in kept} == kept
    assert not fleet.logs_in("cam-03", cam03)
    fleet.run("broker-reload")  # the pid file's broker: this fleet's
    wait_for(lambda: fleet.logs_in("cam-03", cam03), 30, "cam-03 let in after the reload")

    # A broker restart while both agents measure. What they produce meanwhile waits in their
    # outboxes. The agents (reconnect_max_s = 2) are back before serve, whose back-off has grown
    # while the broker was away (up to 10 s): what they send until then waits in the cloud's
    # session, which only the broker's persistence carries over the restart.
    before = {d: fleet.last_seq(d) for d in DEVICES}
    fleet.stop_broker()
    wait_for(
        lambda: all(fleet.last_seq(d) >= before[d] + 10 for d in DEVICES),
        60,
        "records made while the broker is down",
    )
    fleet.start_broker()
    after = {d: fleet.last_seq(d) for d in DEVICES}
    wait_for(
        lambda: all(fleet.last_seq(d) >= after[d] + 10 for d in DEVICES),
        60,
        "records made after the restart, while serve may still be reconnecting",
    )

    # 3. Push a model: compress with each profile's default choice, release from the report,
    # deploy and wait for the rollout.
    push = fleet.run("push", timeout=300)
    assert push[-1].code == 0, push[-1]
    chosen = {}
    for profile in DEVICES.values():
        report = json.loads((work / "out" / profile / "report.json").read_text())
        chosen[profile] = report["chosen"]
    assert chosen == {"rpi5": "int8", "x86-gateway": "dynamic_int8"}  # the profiles' defaults
    conn = store(fleet)
    try:
        released = dict(
            conn.execute(
                "SELECT profile, target_sha256 FROM releases WHERE name = 'digits' AND version = 7"
            ).fetchall()
        )
        committed = dict(
            conn.execute(
                "SELECT device_id, reason FROM updates WHERE phase = 'committed' AND version = 7"
            )
        )
        (state,) = conn.execute("SELECT state FROM rollouts").fetchone()
    finally:
        conn.close()
    assert state == "completed" and set(committed) == set(DEVICES)
    for profile in DEVICES.values():
        assert (
            released[profile]
            == hashlib.sha256((work / "out" / profile / "chosen.tflite").read_bytes()).hexdigest()
        )
    for device_id, profile in DEVICES.items():
        wait_for(
            lambda d=device_id, p=profile: active_sha(fleet, d) == released[p],
            30,
            f"{device_id} serving its profile's build",
        )
        assert cam01.poll() is None and cam02.poll() is None

    # No record lost: every seq each agent produced, including those from the outage, is stored.
    for device_id in DEVICES:
        produced = fleet.last_seq(device_id)
        assert produced >= after[device_id] + 10 > before[device_id] + 10
        wait_for(
            lambda d=device_id, n=produced: set(range(1, n + 1)) <= stored_seqs(fleet, d),
            60,
            f"every seq of {device_id} up to {produced} in the cloud store",
        )

    # 4. Watch: every command of the block; `<id>` is the rollout's, and a `--follow` runs
    # until it has printed what it follows.
    conn = store(fleet)
    try:
        (rollout_id,) = conn.execute("SELECT id FROM rollouts").fetchone()
    finally:
        conn.close()
    watch = fleet.block("watch")
    with_id = fleet.rewrite.also({"<id>": rollout_id})
    for command in watch.commands:
        if "--follow" in command:
            follow(fleet, command)
            continue
        ran = run_block(replace(watch, commands=(command,)), work, fleet.env, 60, with_id)
        assert ran[0].code == 0, ran
        if command.startswith("litefleet devices"):
            assert all(d in ran[0].out for d in DEVICES) and "digits@7" in ran[0].out, ran[0].out
        if "<id>" in command:
            (shown,) = json.loads(ran[0].out)
            assert (shown["id"], shown["state"]) == (rollout_id, "completed"), shown

    # Logs an operator can read: each agent says what it did with the deployment, in words,
    # and no log holds an object's repr.
    for device_id in DEVICES:
        assert re.search(
            r"deployment \w+ handled: probation digits@7 \(", fleet.log_text(device_id)
        )
    for key in (*DEVICES, "serve"):
        assert not OBJECT_REPR.findall(fleet.log_text(key)), key


OBJECT_REPR = re.compile(r"\b[A-Z]\w+\((?:[a-z_]+=)")  # UpdateOutcome(phase='probation', ...)


def follow(fleet: GuideFleet, command: str) -> None:
    """Start a `--follow` command as written, wait for its first lines, stop it (SIGTERM)."""
    out = fleet.root / "follow.out"
    out.unlink(missing_ok=True)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {fleet.rewrite(command)}"],
            cwd=fleet.work,
            env=fleet.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "cam-01" in out.read_text(errors="replace"),
            60,
            f"{command!r} to print cam-01's records: {out.read_text(errors='replace')}",
        )
        assert proc.poll() is None  # it follows: still running
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
