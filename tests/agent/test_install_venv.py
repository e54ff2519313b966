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
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from agent.cli import main

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits.tflite"
PACKAGES = ("agent", "shared", "cloud", "device_profiles")


def build_wheel(out: Path) -> Path:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    dist_info, data = f"{name}-{version}.dist-info", f"{name}-{version}.data/data"
    entries: dict[str, bytes] = {}
    for package in PACKAGES:
        for f in sorted((REPO / package).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".toml",
                                                                            ".typed"):
                entries[str(f.relative_to(REPO))] = f.read_bytes()
    for f in sorted((REPO / "systemd").iterdir()):
        entries[f"{data}/share/litefleet/systemd/{f.name}"] = f.read_bytes()
    scripts = "".join(f"{k} = {v}\n" for k, v in meta["scripts"].items())
    entries[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").encode()
    entries[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: litefleet-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n")
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
initial = "{MODEL}"
[source]
uri = "camera:0"
[trust]
keys = ["{"ab" * 32}"]
""")
    root = tmp_path / "root"
    argv = ["install", "--config", str(config), "--root", str(root), "--source", str(wheel),
            "--pip-arg=--no-deps", "--pip-arg=--no-index", "--prefix", "/opt/litefleet"]
    assert main(argv) == 0

    venv = root / "opt/litefleet/venv"
    script = venv / "bin/litefleet-agent"
    # the console script runs the venv's python at its path on the device, not in the tree
    assert script.read_text().splitlines()[0] == "#!/opt/litefleet/venv/bin/python"
    assert os.access(script, os.X_OK)
    assert (venv / "share/litefleet/systemd/litefleet-agent.service").read_bytes() == (
        REPO / "systemd/litefleet-agent.service").read_bytes()
    # the package was installed into the venv (not merely found on some path)
    done = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import agent, device_profiles; print(agent.__file__); "
         "print(len(device_profiles.bundled_profiles()))"],
        capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"})
    where, count = done.stdout.split()
    assert where.startswith(str(venv / "lib"))
    assert int(count) >= 5
    # no TensorFlow: the base install is the device's; a camera device asks for OpenCV
    assert not list((venv / "lib").glob("python*/site-packages/tensorflow*"))
    assert json.loads((venv / "litefleet-install.json").read_text())["extras"] == ["camera"]

    mtimes = {p: p.stat().st_mtime_ns for p in venv.rglob("*") if p.is_file()}
    assert main(argv) == 0  # second run: the stamp matches, pip is not even started
    assert {p: p.stat().st_mtime_ns for p in venv.rglob("*") if p.is_file()} == mtimes


def test_venv_command_lines(tmp_path: Path) -> None:
    from agent.installer.venv import VenvPlan

    plan = VenvPlan(tmp_path / "opt/litefleet/venv", "/opt/litefleet/venv", Path("/src"),
                    sys.executable, ("--no-index", "--find-links=/srv/wheels"))
    assert plan.create_command() == [sys.executable, "-m", "venv", str(plan.path)]
    assert plan.install_command() == [
        str(plan.path / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check",
        "--no-input", "--no-index", "--find-links=/srv/wheels", "/src"]


def test_a_device_that_reads_frames_installs_the_camera_extra(tmp_path: Path) -> None:
    from agent.installer.venv import VenvPlan

    plan = VenvPlan(tmp_path / "venv", "/opt/litefleet/venv", Path("/src"), sys.executable,
                    extras=("camera",))
    assert plan.install_command()[-1] == "/src[camera]"
