"""The operator guide's commands, read from docs/operator-guide.md (and docs/install.md, where
the guide sends the reader), so a test can run them as written (and the guide cannot drift from
what the commands accept).

A block is a fence directly after a marker line, ```sh for commands or another language for a
file the reader writes (its text is in `GuideBlock.text`):

    <!-- guide-test: NAME [background] -->
    ```sh
    litefleet check-config --config cloud.toml
    litefleet serve --config cloud.toml     # comments are fine
    ```

`guide_blocks(text)` returns the marked blocks in order; each command is one shell line
(`\\` continuations joined). `argv(command)` splits one with the shell's quoting rules and drops
its trailing comment. `Rewrite` is the test's short, declared list of literal substitutions
(paths under /etc and /var/lib into a temporary folder, ports to free ones) applied to a
command or a file's text. `run_block(block, cwd, env)` runs a block's commands one by one in
bash, stopping at the first failure, and returns what each printed; `start_block` starts a
`background` block's one command (serve, an agent) and returns its process: the harness the
end-to-end test (tests/e2e/test_operator_guide.py) drives.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GUIDE",
    "INSTALL",
    "GuideBlock",
    "Ran",
    "Rewrite",
    "argv",
    "guide_blocks",
    "run_block",
    "start_block",
]

DOCS = Path(__file__).resolve().parents[2] / "docs"
GUIDE = DOCS / "operator-guide.md"
INSTALL = DOCS / "install.md"
_MARKER = re.compile(r"^<!--\s*guide-test:\s*([\w.-]+)((?:\s+[\w-]+)*)\s*-->\s*$")
_FENCE = re.compile(r"^```(\w+)$")
OPTIONS = frozenset({"background"})


@dataclass(frozen=True)
class GuideBlock:
    name: str
    line: int  # of the opening fence, 1-based
    commands: tuple[str, ...]  # a ```sh block's; none for a file
    lang: str = "sh"
    text: str = ""  # the block as written
    options: frozenset[str] = frozenset()

    @property
    def background(self) -> bool:
        return "background" in self.options


def guide_blocks(text: str) -> list[GuideBlock]:
    lines = text.splitlines()
    blocks: list[GuideBlock] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        if marker is None:
            i += 1
            continue
        fence = _FENCE.match(lines[i + 1].strip()) if i + 1 < len(lines) else None
        if fence is None:
            raise ValueError(f"line {i + 1}: a guide-test marker must precede a ```LANG block")
        options = frozenset(marker.group(2).split())
        if options - OPTIONS:
            raise ValueError(f"line {i + 1}: unknown guide-test option {sorted(options - OPTIONS)}")
        lang = fence.group(1)
        start, i = i + 2, i + 2
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start}: the ```sh block is not closed")
        commands = tuple(_commands(body)) if lang == "sh" else ()
        if "background" in options and len(commands) != 1:
            raise ValueError(f"line {start}: a background block holds exactly one command")
        blocks.append(
            GuideBlock(marker.group(1), start, commands, lang, "\n".join(body) + "\n", options)
        )
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


class Rewrite:
    """Literal substitutions, each matched as a whole word (a path or a port not followed by
    more of a name: `/etc/litefleet` never touches `/etc/litefleet-cloud`, `1883` never
    `18830`); the longest literal wins where two start at the same place."""

    def __init__(self, pairs: dict[str, str]) -> None:
        self.pairs = dict(pairs)
        alternatives = "|".join(re.escape(k) for k in sorted(pairs, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w.-])")

    def __call__(self, text: str) -> str:
        return self._pattern.sub(lambda m: self.pairs[m.group(0)], text)

    def also(self, pairs: dict[str, str]) -> Rewrite:
        return Rewrite({**self.pairs, **pairs})


@dataclass(frozen=True)
class Ran:
    command: str
    code: int
    out: str
    err: str


def run_block(
    block: GuideBlock,
    cwd: Path,
    env: dict[str, str],
    timeout: float = 600.0,
    rewrite: Rewrite | None = None,
) -> list[Ran]:
    """Run each command of `block` in bash (as a reader pastes it); stop at the first failure."""
    assert not block.background, f"{block.name} is a background block: start_block it"
    done: list[Ran] = []
    for command in block.commands:
        command = rewrite(command) if rewrite else command
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        done.append(Ran(command, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
    return done


def start_block(
    block: GuideBlock, cwd: Path, env: dict[str, str], log: Path, rewrite: Rewrite | None = None
) -> subprocess.Popen[bytes]:
    """Start a background block's one command (bash execs it: the process is the command's),
    its output appended to `log`."""
    assert block.background, f"{block.name} is not a background block"
    (command,) = block.commands
    command = rewrite(command) if rewrite else command
    with log.open("ab") as out:
        out.write(f"---- {command}\n".encode())
        out.flush()
        return subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
