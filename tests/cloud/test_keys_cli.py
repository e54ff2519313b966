import json
import stat
import subprocess
import sys

from localio.keyfiles import load_signing_key
from shared.keys import PublicKey


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_generate_writes_private_0600_and_public_hex(tmp_path):
    result = run("keys", "generate", "--dir", str(tmp_path / "k"), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    private = tmp_path / "k" / "release.key"
    public_text = (tmp_path / "k" / "release.pub").read_text()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public_text.endswith("\n") and len(public_text.strip()) == 64
    public = PublicKey.from_hex(public_text)
    assert load_signing_key(private).public == public
    assert shown["keyid"] == public.keyid

    again = run("keys", "generate", "--dir", str(tmp_path / "k"))
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr
    assert (tmp_path / "k" / "release.pub").read_text() == public_text

    show = run("keys", "show", "--dir", str(tmp_path / "k"), "--json")
    assert json.loads(show.stdout)["public_key"] == public.hex


def test_help_explains_the_commands():
    for module in ("cloud.cli", "agent.cli"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0
        assert "commands:" in result.stdout
    assert "keys" in run("--help").stdout
