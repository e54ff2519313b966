"""The agent's virtual environment: `<prefix>/venv` with the base install (no TensorFlow).

`pip install <source>` (with the `camera` extra when the device reads frames), where the
source is a source tree (the one this code runs from by default), a wheel or an sdist. A stamp
file in the venv records what was installed (a content fingerprint of the source, the Python and
the pip arguments), so a second run with the same source does nothing.

The venv has no pip of its own (`python -m venv --without-pip`: pip and setuptools would be
27 MB of a ~180 MB sensor install): the installing Python's pip installs into it with
`pip --python <venv>/bin/python`, which needs pip 22.3 or newer there.

Under `--root`, the venv is built in the tree with this machine's Python and its scripts are
relocated to the final prefix (their `#!` lines); the image then needs that same Python at the
same path (same distribution and architecture). Otherwise install inside the image (chroot).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import agent

from .files import Change, write_file
from .process import Runner, run_command

__all__ = [
    "MIN_PIP",
    "STAMP_NAME",
    "VenvPlan",
    "default_source",
    "ensure_venv",
    "evict_page_cache",
    "pip_problem",
    "source_fingerprint",
]

STAMP_NAME = "litefleet-install.json"
MIN_PIP = (22, 3)  # the first pip with `--python`: it installs into a venv without pip
_TREE_PARTS = (
    "pyproject.toml",
    "agent",
    "shared",
    "localio",
    "cloud",
    "device_profiles",
    "systemd",
)
_SKIP = ("__pycache__", ".pyc", ".pyo")


@dataclass(frozen=True)
class VenvPlan:
    path: Path  # where the venv is written (under the root)
    final_path: str  # where it lives on the device (the same without --root)
    source: Path
    python: str
    pip_args: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()  # e.g. ("camera",) for a device that reads frames

    @property
    def bin_python(self) -> Path:
        return self.path / "bin" / "python"

    def create_command(self) -> list[str]:
        return [self.python, "-m", "venv", "--without-pip", str(self.path)]

    def pip_command(self) -> list[str]:
        """The installing Python's pip, working on the venv's interpreter."""
        return [self.python, "-m", "pip", "--python", str(self.bin_python)]

    def install_command(self) -> list[str]:
        return [
            *self.pip_command(),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *self.pip_args,
            self.requirement,
        ]

    @property
    def requirement(self) -> str:
        """The source with its extras: `/src/tree[camera]`."""
        return f"{self.source}[{','.join(self.extras)}]" if self.extras else str(self.source)

    def uninstall_command(self) -> list[str]:
        return [*self.pip_command(), "uninstall", "--disable-pip-version-check", "-y", "litefleet"]


def pip_problem(python: str) -> str | None:
    """One line when `python` has no pip that can install into another venv, else None."""
    try:
        done = subprocess.run(
            [python, "-m", "pip", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"--python {python}: cannot run it ({e})"
    found = re.match(r"pip (\d+)\.(\d+)", done.stdout)
    need = ".".join(map(str, MIN_PIP))
    if done.returncode != 0 or found is None:
        return (
            f"--python {python} has no pip; the device venv is built without one and "
            f"filled by this Python's pip (>= {need}): install pip for it"
        )
    if (int(found[1]), int(found[2])) < MIN_PIP:
        return (
            f"--python {python} has pip {found[1]}.{found[2]}; installing into the device "
            f"venv needs pip >= {need} (`{python} -m pip install -U pip`)"
        )
    return None


def default_source() -> Path | None:
    """The source tree this code runs from, when it runs from one (a checkout)."""
    tree = Path(agent.__file__).resolve().parent.parent
    return tree if (tree / "pyproject.toml").is_file() and (tree / "agent").is_dir() else None


def source_fingerprint(source: Path) -> str:
    """sha256 over a wheel/sdist's bytes, or over a source tree's package files."""
    h = hashlib.sha256()
    if source.is_file():
        with source.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    files: list[Path] = []
    for part in _TREE_PARTS:
        p = source / part
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(s in f.parts or f.name.endswith(s) for s in _SKIP)
            )
    for file in sorted(files):
        h.update(str(file.relative_to(source)).encode() + b"\0")
        h.update(hashlib.sha256(file.read_bytes()).digest())
    return h.hexdigest()


def ensure_venv(plan: VenvPlan, run: Runner = run_command) -> Change:
    """Create or update the venv; `unchanged` when the stamp matches the source."""
    stamp_path = plan.path / STAMP_NAME
    stamp = {
        "source": str(plan.source),
        "fingerprint": source_fingerprint(plan.source),
        "python": plan.python,
        "pip_args": list(plan.pip_args),
        "extras": list(plan.extras),
        "final_path": plan.final_path,
    }
    stamp_bytes = (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode()
    script = plan.path / "bin" / "litefleet-agent"
    if stamp_path.is_file() and stamp_path.read_bytes() == stamp_bytes and script.is_file():
        return Change("unchanged", plan.path)
    existed = plan.bin_python.exists()
    if not existed:
        run(plan.create_command())
    else:
        run(plan.uninstall_command())
    run(plan.install_command())
    if str(plan.path) != plan.final_path:
        _relocate_scripts(plan.path, plan.final_path)
    write_file(stamp_path, stamp_bytes, 0o644)
    evict_page_cache(plan.path)
    return Change("updated" if existed else "created", plan.path, f"pip install {plan.requirement}")


def evict_page_cache(folder: Path) -> None:
    """Write the folder's files to disk and drop them from the page cache.

    A recent pip leaves the files it has just written cached in large folios, and a process
    that maps them (the agent starting right after the install) counts whole folios as
    resident: a camera agent measured 129 MB instead of 88 until the next reboot. Read back
    from disk, the libraries are only as resident as they are used.
    """
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # unreadable: nothing to gain, nothing to fail the install for
        try:
            os.fsync(fd)  # only clean pages can be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # a filesystem without fadvise: the pages stay cached, the install is still good
        finally:
            os.close(fd)


def _relocate_scripts(venv: Path, final: str) -> None:
    """Rewrite `#!<tree venv>/bin/python` lines to the path the venv has on the device."""
    built = f"#!{venv}/bin/"
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with script.open("rb") as stream:
            head = stream.read(len(built) + 64)
        if not head.startswith(built.encode()):
            continue
        first, _, rest = script.read_bytes().partition(b"\n")
        fixed = first.replace(str(venv).encode(), final.encode(), 1) + b"\n" + rest
        write_file(script, fixed, script.stat().st_mode & 0o7777)
    for activate in ("activate", "activate.csh", "activate.fish"):
        path = venv / "bin" / activate
        if path.is_file():
            relocated = path.read_text(encoding="utf-8").replace(str(venv), final)
            write_file(path, relocated.encode(), path.stat().st_mode & 0o7777)
