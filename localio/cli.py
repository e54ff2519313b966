"""Command-line plumbing both console scripts share: subcommand discovery and exit codes.

Each module in a `commands` package defines `register(subparsers)`, which adds one or more
subcommands whose handler is stored as `func` in the parser defaults and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable
from types import ModuleType

__all__ = [
    "EXIT_INVALID",
    "EXIT_REJECTED",
    "EXIT_UNAVAILABLE",
    "build_parser",
    "print_check_report",
    "run_parser",
]

EXIT_INVALID = 2  # bad usage or invalid configuration
EXIT_REJECTED = 3  # the input was refused (signature, hash, version, ...)
EXIT_UNAVAILABLE = 4  # something we depend on is down; retry later


def build_parser(prog: str, description: str, commands: ModuleType) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = (
            getattr(module, "register", None)
        )
        if register is not None:
            register(subparsers)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_INVALID
    return func(args)


def print_check_report(
    problems: list[str], warnings: list[str], notes: list[str], as_json: bool
) -> int:
    """What `check-config` says, for either program: problems and warnings one line each on
    stderr and notes on stdout (or one JSON object); exit 2 when there is any problem."""
    if as_json:
        print(
            json.dumps(
                {"ok": not problems, "problems": problems, "warnings": warnings, "notes": notes}
            )
        )
    else:
        for line in problems + warnings:
            print(line, file=sys.stderr)
        for line in notes:
            print(line)
    return EXIT_INVALID if problems else 0
