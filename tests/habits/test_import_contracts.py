"""The layer contracts (`[tool.importlinter]` in pyproject.toml, run by `make lint`) hold, and
a broken one fails: checked on a copy of the tree with one forbidden import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "cloud", "shared", "localio", "device_profiles")
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def copy_tree(dest: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(
            REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.toml")
        )
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_contracts_hold_on_the_tree_and_a_forbidden_import_breaks_one(tmp_path):
    tree = copy_tree(tmp_path / "tree")
    kept = lint(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr  # the positive control
    assert "4 kept, 0 broken" in kept.stdout

    phases = tree / "shared" / "phases.py"
    phases.write_text(phases.read_text() + "\nimport agent.update.journal  # a violation\n")
    broken = lint(tree)
    assert broken.returncode != 0
    assert "shared is the contract only" in broken.stdout and "BROKEN" in broken.stdout
    assert "shared.phases -> agent.update.journal" in broken.stdout
