"""`shared` is the wire contract: bytes in, typed documents out. No file, network or process
I/O (that lives in `localio`, the agent and the cloud side)."""

from __future__ import annotations

import ast
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
IO_MODULES = {
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "socket",
    "subprocess",
    "sqlite3",
    "urllib",
    "http",
    "paho",
    "boto3",
    "requests",
    "fcntl",
    "signal",
    "threading",
}


def io_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in IO_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in IO_MODULES:
                found.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"open", "print", "input"}
        ):
            found.append(f"{node.func.id}()")
    return found


def test_no_module_in_shared_does_io():
    offenders = {
        p.name: uses for p in sorted(SHARED.glob("*.py")) if (uses := io_uses(p.read_text()))
    }
    assert offenders == {}


def test_the_check_sees_io_when_there_is_some():  # the positive control
    assert io_uses("import os\nfrom pathlib import Path\nopen('x')\n") == [
        "os",
        "pathlib",
        "open()",
    ]
