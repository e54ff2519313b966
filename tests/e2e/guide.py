"""The operator guide's commands, read from docs/operator-guide.md, so a test can run them as
written (and the guide cannot drift from what the commands accept).

A block is a ```sh fence directly after a marker line:

    <!-- guide-test: NAME -->
    ```sh
    litefleet check-config --config cloud.toml
    litefleet serve --config cloud.toml     # comments are fine
    ```

`guide_blocks(text)` returns the marked blocks in order; each command is one shell line
(`\\` continuations joined). `argv(command)` splits one with the shell's quoting rules and drops
its trailing comment. `run_block(block, cwd, env)` runs a block's commands one by one in bash,
stopping at the first failure, and returns what each printed: the harness an end-to-end test
(tests/e2e/test_operator_guide.py) drives with its own broker, serve and agents.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GuideBlock", "argv", "guide_blocks", "run_block"]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"
_MARKER = re.compile(r"^<!--\s*guide-test:\s*([\w.-]+)\s*-->\s*$")


@dataclass(frozen=True)
class GuideBlock:
    name: str
    line: int  # of the opening fence, 1-based
    commands: tuple[str, ...]


def guide_blocks(text: str) -> list[GuideBlock]:
    lines = text.splitlines()
    blocks: list[GuideBlock] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        if marker is None:
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```sh":
            raise ValueError(f"line {i + 1}: a guide-test marker must precede a ```sh block")
        start, i = i + 2, i + 2
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start}: the ```sh block is not closed")
        blocks.append(GuideBlock(marker.group(1), start, tuple(_commands(body))))
        i += 1
    return blocks


def _commands(body: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in body:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append((pending + line.strip()).strip())
        pending = ""
    if pending:
        commands.append(pending.strip())
    return commands


def argv(command: str) -> list[str]:
    """One command's words, as the shell splits them, without its trailing comment."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


@dataclass(frozen=True)
class Ran:
    command: str
    code: int
    out: str
    err: str


def run_block(block: GuideBlock, cwd: Path, env: dict[str, str],
              timeout: float = 600.0) -> list[Ran]:
    """Run each command of `block` in bash (as a reader pastes it); stop at the first failure."""
    done: list[Ran] = []
    for command in block.commands:
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
        done.append(Ran(command, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
    return done
