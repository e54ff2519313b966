"""`litefleet-agent install --root` with the venv step: a real venv, a real pip install.

To stay offline and fast (no build backend download, no dependency resolution), the test packs
the project's files into a wheel itself (the layout setuptools would produce, including the
systemd templates as data files) and installs it with `--no-deps --no-index`. The dependencies
are the registry's business and not the point here: the point is the venv at the prefix, the
console script relocated to the device path, and a second run that changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from agent.cli import main

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits.tflite"
# where the configs name the model: inside --root, never the checkout's path (a checkout under
# /tmp or /home is a path the unit hides, which the installer rightly refuses)
INSTALLED_MODEL = "/usr/share/litefleet/digits.tflite"


def model_in(root: Path) -> None:
    target = root / INSTALLED_MODEL.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL, target)


PACKAGES = ("agent", "shared", "localio", "cloud", "device_profiles")


def build_wheel(out: Path) -> Path:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    dist_info, data = f"{name}-{version}.dist-info", f"{name}-{version}.data/data"
    entries: dict[str, bytes] = {}
    for package in PACKAGES:
        for f in sorted((REPO / package).rglob("*")):
            if (
                f.is_file()
                and "__pycache__" not in f.parts
                and f.suffix in (".py", ".toml", ".typed")
            ):
                entries[str(f.relative_to(REPO))] = f.read_bytes()
    for f in sorted((REPO / "systemd").iterdir()):
        entries[f"{data}/share/litefleet/systemd/{f.name}"] = f.read_bytes()
    scripts = "".join(f"{k} = {v}\n" for k, v in meta["scripts"].items())
    entries[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    ).encode()
    entries[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: litefleet-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    entries[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{scripts}".encode()
    record = []
    for path, body in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(body)}")
    record.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for path, body in entries.items():
            z.writestr(path, body)
    return wheel


def test_install_creates_a_relocated_venv_once(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(f"""\
device_id = "cam-01"
profile = "rpi4"
[model]
name = "digits"
initial = "{INSTALLED_MODEL}"
[source]
uri = "camera:0"
[trust]
keys = ["{"ab" * 32}"]
""")
    root = tmp_path / "root"
    model_in(root)
    argv = [
        "install",
        "--config",
        str(config),
        "--root",
        str(root),
        "--source",
        str(wheel),
        "--pip-arg=--no-deps",
        "--pip-arg=--no-index",
        "--prefix",
        "/opt/litefleet",
    ]
    assert main(argv) == 0

    venv = root / "opt/litefleet/venv"
    script = venv / "bin/litefleet-agent"
    # the console script runs the venv's python at its path on the device, not in the tree
    assert script.read_text().splitlines()[0] == "#!/opt/litefleet/venv/bin/python"
    assert os.access(script, os.X_OK)
    assert (venv / "share/litefleet/systemd/litefleet-agent.service").read_bytes() == (
        REPO / "systemd/litefleet-agent.service"
    ).read_bytes()
    # the package was installed into the venv (not merely found on some path)
    done = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import agent, device_profiles; print(agent.__file__); "
            "print(len(device_profiles.bundled_profiles()))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    where, count = done.stdout.split()
    assert where.startswith(str(venv / "lib"))
    assert int(count) >= 5
    # no TensorFlow: the base install is the device's; a camera device asks for OpenCV
    assert not list((venv / "lib").glob("python*/site-packages/tensorflow*"))
    # no pip or setuptools in the device venv: this Python's pip installed into it
    site = next((venv / "lib").glob("python*/site-packages"))
    assert not list(site.glob("pip*")) and not list(site.glob("setuptools*"))
    assert not (venv / "bin/pip").exists()
    assert json.loads((venv / "litefleet-install.json").read_text())["extras"] == ["camera"]

    mtimes = {p: p.stat().st_mtime_ns for p in venv.rglob("*") if p.is_file()}
    assert main(argv) == 0  # second run: the stamp matches, pip is not even started
    assert {p: p.stat().st_mtime_ns for p in venv.rglob("*") if p.is_file()} == mtimes


def test_venv_command_lines(tmp_path: Path) -> None:
    from agent.installer.venv import VenvPlan

    plan = VenvPlan(
        tmp_path / "opt/litefleet/venv",
        "/opt/litefleet/venv",
        Path("/src"),
        sys.executable,
        ("--no-index", "--find-links=/srv/wheels"),
    )
    assert plan.create_command() == [sys.executable, "-m", "venv", "--without-pip", str(plan.path)]
    pip = [sys.executable, "-m", "pip", "--python", str(plan.path / "bin/python")]
    assert plan.install_command() == [
        *pip,
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-index",
        "--find-links=/srv/wheels",
        "/src",
    ]
    assert plan.uninstall_command() == [
        *pip,
        "uninstall",
        "--disable-pip-version-check",
        "-y",
        "litefleet",
    ]


def test_a_second_install_uninstalls_and_reinstalls_with_the_outer_pip(tmp_path: Path) -> None:
    from agent.installer.venv import STAMP_NAME, VenvPlan, ensure_venv

    first = build_wheel(tmp_path)
    plan = VenvPlan(
        tmp_path / "venv",
        str(tmp_path / "venv"),
        first,
        sys.executable,
        ("--no-deps", "--no-index"),
    )
    assert ensure_venv(plan).action == "created"
    (plan.path / STAMP_NAME).write_text("{}")  # as if the source had changed
    assert ensure_venv(plan).action == "updated"
    listed = subprocess.run(
        [*plan.pip_command(), "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names = {d["name"] for d in json.loads(listed.stdout)}
    assert "litefleet" in names and "pip" not in names


def test_a_python_with_an_old_pip_is_refused_in_one_line(tmp_path: Path) -> None:
    from agent.installer.venv import pip_problem

    old = tmp_path / "python-old-pip"  # stands in for an interpreter with pip 21.3
    old.write_text("#!/bin/sh\necho 'pip 21.3.1 from /usr/lib/python3/dist-packages/pip'\n")
    old.chmod(0o755)
    problem = pip_problem(str(old))
    assert problem is not None and "pip 21.3" in problem and ">= 22.3" in problem
    assert "\n" not in problem
    nopip = tmp_path / "python-no-pip"
    nopip.write_text("#!/bin/sh\necho 'No module named pip' >&2\nexit 1\n")
    nopip.chmod(0o755)
    assert "has no pip" in (pip_problem(str(nopip)) or "")
    assert pip_problem(sys.executable) is None


def test_install_refuses_a_python_without_a_recent_pip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "python-old-pip"
    old.write_text("#!/bin/sh\necho 'pip 20.0.2 from /usr/lib/python3/dist-packages/pip'\n")
    old.chmod(0o755)
    config = tmp_path / "agent.toml"
    config.write_text(f"""\
device_id = "s-01"
profile = "rpi4"
[model]
name = "digits"
initial = "{INSTALLED_MODEL}"
[source]
uri = "synthetic:sensor"
[trust]
keys = ["{"ab" * 32}"]
""")
    root = tmp_path / "root"
    model_in(root)
    assert (
        main(
            [
                "install",
                "--config",
                str(config),
                "--root",
                str(root),
                "--source",
                str(REPO),
                "--python",
                str(old),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "pip 20.0" in err and ">= 22.3" in err and "Traceback" not in err
    assert not (root / "opt/litefleet/venv").exists()


def test_a_device_that_reads_frames_installs_the_camera_extra(tmp_path: Path) -> None:
    from agent.installer.venv import VenvPlan

    plan = VenvPlan(
        tmp_path / "venv", "/opt/litefleet/venv", Path("/src"), sys.executable, extras=("camera",)
    )
    assert plan.install_command()[-1] == "/src[camera]"


def cached_pages(files: list[Path]) -> int:
    done = subprocess.run(
        ["fincore", "--noheadings", "--raw", "--output", "PAGES", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return sum(int(line) for line in done.stdout.split())


def test_the_installed_files_are_left_on_disk_not_in_the_page_cache(tmp_path: Path) -> None:
    # files pip has just written stay cached in large folios, which an agent started right
    # after the install would count as resident; the installer writes them out and drops them
    from agent.installer.venv import VenvPlan, ensure_venv

    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    plan = VenvPlan(
        tmp_path / "venv",
        str(tmp_path / "venv"),
        build_wheel(tmp_path),
        sys.executable,
        ("--no-deps", "--no-index"),
    )
    assert ensure_venv(plan).action == "created"
    files = sorted(plan.path.glob("lib/python*/site-packages/agent/**/*.py"))
    assert len(files) > 20
    assert cached_pages(files) == 0
    for file in files:  # positive control: read back, fincore sees them cached
        file.read_bytes()
    assert cached_pages(files) >= len(files)
