"""`litefleet-agent check-config --config F`: validate the config, load the initial model, and
try the source and the broker.

Problems (the agent cannot run as configured) exit 2, one line each on stderr. Warnings (the
source cannot be opened or the broker cannot be reached from here, now) are printed but do not
fail the check: a camera may be unplugged and a broker down while a config is written, and the
agent retries both. "valid" is only said of a config with no problem.
"""

from __future__ import annotations

import argparse
import socket
import threading
from pathlib import Path

from agent.config import AgentConfig, ConfigInvalid, load_config
from localio.cli import print_check_report
from shared.errors import Rejected

__all__ = ["register"]

PROBE_TIMEOUT_S = 5.0  # for the broker's TCP connect and the source's open


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check-config",
        help="validate the agent config; one line per problem, exit 2 when invalid",
        description="Check every key of the agent config and that [model] initial loads and "
        "runs in the runtime. Prints one line per problem and exits 2 when there is any. "
        "Also tries to open [source] uri and to reach the [mqtt] broker, and warns (without "
        "failing) when either is not possible from here now.",
    )
    p.add_argument("--config", required=True, type=Path, help="the agent config (agent.toml)")
    p.add_argument(
        "--json", action="store_true", help="print {ok, problems, warnings, notes} as JSON"
    )
    p.add_argument(
        "--no-model", action="store_true", help="skip loading [model] initial (config keys only)"
    )
    p.add_argument("--offline", action="store_true", help="do not try the source or the broker")
    p.set_defaults(func=_check)


def _model_problems(config: AgentConfig) -> tuple[list[str], str]:
    from agent.runtime import load_model  # loads the runtime only when asked to

    runtime = config.profile.runtime
    try:
        model = load_model(config.model.initial, runtime.threads, runtime.delegates)
    except Rejected as e:
        return [f"model.initial: {config.model.initial} does not load: {e}"], ""
    try:
        inputs = ", ".join(f"{list(t.shape)} {t.dtype}" for t in model.signature.inputs)
        return (
            [],
            f"model {config.model.initial} loads (sha256 {model.sha256[:12]}, input {inputs})",
        )
    finally:
        model.close()


def _broker_warning(config: AgentConfig) -> str | None:
    host, port = config.mqtt.host, config.mqtt.port
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        return (
            f"warning: mqtt: cannot reach the broker at {host}:{port} ({reason}); the agent "
            "keeps retrying and buffers telemetry meanwhile"
        )


def _source_warning(config: AgentConfig) -> str | None:
    """Open the source and close it again, in a thread bounded by PROBE_TIMEOUT_S (a network
    stream can take OpenCV half a minute to give up on)."""
    from agent.sources import SourceDown, open_source

    uri = config.source.uri
    outcome: list[str] = []

    def probe() -> None:
        try:
            source = open_source(uri, config.profile.camera)
            source.open()
            source.close()
            outcome.append("")
        except (SourceDown, ValueError, OSError) as e:
            outcome.append(str(e) or type(e).__name__)

    worker = threading.Thread(target=probe, name="source-probe", daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    if not outcome:
        return (
            f"warning: source.uri: {uri} did not open within {PROBE_TIMEOUT_S:g} s; the agent "
            "keeps trying"
        )
    if outcome[0]:
        return f"warning: source.uri: cannot open {uri}: {outcome[0]}; the agent keeps trying"
    return None


def _check(args: argparse.Namespace) -> int:
    problems: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    try:
        config = load_config(args.config)
    except ConfigInvalid as e:
        problems = list(e.problems)
    else:
        if not args.no_model:
            model_problems, note = _model_problems(config)
            problems += model_problems
            if note:
                notes.append(note)
        if not args.offline:
            warnings += [w for w in (_source_warning(config), _broker_warning(config)) if w]
        if problems:
            notes.insert(
                0, f"config {args.config} has {len(problems)} problem(s): the agent would not start"
            )
        else:
            notes.insert(
                0,
                f"config {args.config} is valid (device {config.device_id}, "
                f"profile {config.profile.name})",
            )
    return print_check_report(problems, warnings, notes, args.json)
