"""`litefleet`: the operator's command."""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata

from localio.cli import EXIT_INVALID, build_parser, run_parser

DESCRIPTION = """\
LiteFleet operator tool: make models fit devices, sign and publish them, roll them out in
waves, and watch the fleet.

The story:
  litefleet keys generate --dir keys/                    a release signing key
  litefleet compress model.keras --profile rpi4 --data train.npz --eval eval.npz --out out/
  litefleet release out/dynamic_int8.tflite --name digits --version 3 --profile rpi4
  litefleet deploy digits@3 --group lobby --waves 1,10%,100% --wait
  litefleet serve                                        ingest, rollout controller, artifacts
  litefleet devices | releases | events | telemetry --follow | rollouts | quarantine
  litefleet keys rotate --add NEW.pub --remove OLD.pub --sign ROOT.key ; litefleet trust publish
  litefleet audit --since 7d                             who released, deployed, rotated what
  litefleet sim --devices 1000 --group lab               simulated devices (docs/scale.md)

Every command reads --config (default: ./cloud.toml or $LITEFLEET_CONFIG) and most accept
--json for scripting.
"""

# Third-party modules only the [cloud] extra installs; a device (base) install lacks them.
CLOUD_EXTRA_MODULES = frozenset(
    {
        "rich",
        "boto3",
        "botocore",
        "matplotlib",
        "amqtt",
        "ai_edge_quantizer",
        "prometheus_client",
        "sqlalchemy",
        "alembic",
        "psycopg",
    }
)
# Checked before any command runs: what every operator command may reach for.
REQUIRED_CLOUD_MODULES = (
    "rich",
    "boto3",
    "prometheus_client",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "uvicorn",
    "argon2",
)


def version() -> str:
    try:
        return metadata.version("litefleet")
    except metadata.PackageNotFoundError:
        from cloud import __version__

        return __version__


def missing_cloud_extra() -> str | None:
    """The first module of the [cloud] extra that is not installed (a device install), or None."""
    for name in REQUIRED_CLOUD_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def _needs_extra(module: str) -> int:
    print(
        f"litefleet needs the cloud extra (missing module {module}): "
        "pip install 'litefleet[cloud]'",
        file=sys.stderr,
    )
    return EXIT_INVALID


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(f"litefleet {version()}")
        return 0
    if (missing := missing_cloud_extra()) is not None:
        return _needs_extra(missing)
    try:
        from cloud import commands

        parser = build_parser("litefleet", DESCRIPTION, commands)
        parser.add_argument("--version", action="version", version=f"litefleet {version()}")
        return run_parser(parser, args)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in CLOUD_EXTRA_MODULES:
            raise
        return _needs_extra(str(e.name))
    except BrokenPipeError:
        # the reader went away (`litefleet devices | head -1`): stop quietly, and keep Python
        # from printing a second error while flushing stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
