"""`litefleet`: the operator's command."""

from __future__ import annotations

import sys

from cloud import commands
from shared.cli_support import build_parser, run_parser

DESCRIPTION = """\
LiteFleet operator tool: make models fit devices, sign and publish them, roll them out in
waves, and watch the fleet.

The story:
  litefleet keys generate --dir keys/                    a release signing key
  litefleet compress model.keras --profile rpi4 --data train.npz --eval eval.npz --out out/
  litefleet release out/dynamic_int8.tflite --name digits --version 3 --profile rpi4
  litefleet deploy digits@3 --group lobby --waves 1,10%,100%
  litefleet serve                                        ingest, rollout controller, artifacts
  litefleet devices | telemetry --follow | rollouts | quarantine

Every command reads --config (default: ./cloud.toml or $LITEFLEET_CONFIG) and most accept
--json for scripting.
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("litefleet", DESCRIPTION, commands)
    return run_parser(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
