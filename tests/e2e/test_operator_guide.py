"""docs/operator-guide.md as a test: its marked ```sh blocks are read by tests/e2e/guide.py.

Today: every marked command is one the real CLIs accept as written (their own argument
parsers, so an option renamed in the code fails here), and the harness runs a block in bash.
The full story (keys, broker-config, serve, two agents on two profiles, compress, release
--from-report, deploy --wait) is to be driven through `run_block` block by block.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from localio.cli import build_parser
from tests.cloud.conftest import write_config
from tests.e2e.guide import GUIDE, argv, guide_blocks, run_block

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
    assert {"cloud", "push", "watch"} <= set(names)
    assert all(b.commands for b in blocks)


def test_every_guide_command_is_accepted_as_written(capsys) -> None:
    checked = 0
    for block in guide_blocks(GUIDE.read_text()):
        for command in block.commands:
            words = argv(command)
            if words[0] not in ("litefleet", "litefleet-agent"):
                continue
            try:
                parser_for(words[0]).parse_args(words[1:])
            except SystemExit as e:
                pytest.fail(f"{GUIDE.name} line {block.line} ({block.name}): {command!r} is "
                            f"refused: {capsys.readouterr().err.strip()} (exit {e.code})")
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
    assert block.commands[1] == "litefleet releases --json --config cloud.toml          " \
        "# an empty store: no release yet"
    bin_dir = Path(sys.executable).parent  # the venv's litefleet scripts
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    ran = run_block(block, tmp_path, env)
    assert [r.code for r in ran] == [0, 0, 2]
    assert ran[0].out.strip() == "litefleet 0.1.0" and ran[1].out.strip() == "[]"
    assert "unrecognized arguments: --name" in ran[2].err
