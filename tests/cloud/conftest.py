"""Fixtures for the cloud side: a signing key and a cloud.toml in a tmp dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from localio.keyfiles import save_signing_key
from shared.keys import SigningKey

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
DIGITS_FT = REPO / "examples" / "models" / "digits-ft.tflite"
VIBRATION = REPO / "examples" / "models" / "vibration.tflite"


@dataclass
class CloudEnv:
    root: Path
    config: Path
    key: SigningKey

    @property
    def db(self) -> Path:
        return self.root / "cloud.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


def write_config(
    root: Path,
    *,
    mqtt_port: int = 1883,
    extra: str = "",
    artifacts: str = "file://artifacts",
    store_extra: str = "",
) -> Path:
    config = root / "cloud.toml"
    config.write_text(
        f"""
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[store]
db = "cloud.db"
artifacts = "{artifacts}"
public_url = "http://127.0.0.1:8080/artifacts"
{store_extra}

[signing]
key = "keys/release.key"

[web]
listen = "127.0.0.1:0"

[http]
host = "127.0.0.1"
port = 0
{extra}
"""
    )
    return config


@pytest.fixture
def cloud_env(tmp_path: Path) -> CloudEnv:
    root = tmp_path / "cloud"
    (root / "keys").mkdir(parents=True)
    key = SigningKey.generate()
    save_signing_key(key, root / "keys" / "release.key")
    return CloudEnv(root, write_config(root), key)
