"""`litefleet-agent check-config --config F`: validate the config and load the initial model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.config import AgentConfig, ConfigInvalid, load_config
from shared.cli_support import EXIT_INVALID
from shared.errors import Rejected

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check-config",
        help="validate the agent config; one line per problem, exit 2 when invalid",
        description="Check every key of the agent config and that [model] initial loads and "
        "runs in the runtime. Prints one line per problem and exits 2 when there is any.",
    )
    p.add_argument("--config", required=True, type=Path, help="the agent config (agent.toml)")
    p.add_argument("--json", action="store_true", help="print {ok, problems, ...} as JSON")
    p.add_argument("--no-model", action="store_true",
                   help="skip loading [model] initial (config keys only)")
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
        return [], f"model {config.model.initial} loads (sha256 {model.sha256[:12]}, input {inputs})"
    finally:
        model.close()


def _check(args: argparse.Namespace) -> int:
    problems: list[str] = []
    notes: list[str] = []
    try:
        config = load_config(args.config)
    except ConfigInvalid as e:
        problems = list(e.problems)
    else:
        notes.append(f"config {args.config} is valid (device {config.device_id}, "
                     f"profile {config.profile.name})")
        if not args.no_model:
            model_problems, note = _model_problems(config)
            problems += model_problems
            if note:
                notes.append(note)
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, "notes": notes}))
    else:
        for line in problems:
            print(line, file=sys.stderr)
        for line in notes:
            print(line)
    return EXIT_INVALID if problems else 0
