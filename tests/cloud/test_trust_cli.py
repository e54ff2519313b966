"""`litefleet keys rotate`, `trust publish|show`, `audit`, and roots in `deploy --out` bundles."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from cloud.cli import main
from localio.cli import EXIT_INVALID, EXIT_REJECTED
from localio.keyfiles import save_signing_key
from shared.keys import SigningKey
from shared.root import implicit_root, walk_chain
from tests.cloud.conftest import DIGITS, CloudEnv, write_config


def new_key(folder: Path) -> tuple[SigningKey, Path, Path]:
    folder.mkdir(parents=True)
    key = SigningKey.generate()
    save_signing_key(key, folder / "release.key")
    (folder / "release.pub").write_text(key.public.hex + "\n")
    return key, folder / "release.key", folder / "release.pub"


def test_rotate_needs_the_signatures_devices_will_check(cloud_env: CloudEnv, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    _, new_priv, new_pub = new_key(cloud_env.root / "k2")
    (cloud_env.root / "keys" / "release.pub").write_text(cloud_env.key.public.hex)
    old_pub = str(cloud_env.root / "keys" / "release.pub")
    code = main(
        [
            "keys",
            "rotate",
            "--add",
            str(new_pub),
            "--remove",
            old_pub,
            "--add-root",
            str(new_pub),
            "--remove-root",
            old_pub,
            "--sign",
            str(new_priv),
            *cfg,
        ]
    )
    err = capsys.readouterr().err
    assert code == EXIT_REJECTED
    assert "not signed by a threshold of root version 1's root keys" in err
    assert err.count("\n") == 1
    assert main(["keys", "rotate", "--remove", str(new_pub), "--sign", str(new_priv), *cfg]) == (
        EXIT_INVALID
    )
    assert "is not a current release key" in capsys.readouterr().err
    assert main(["trust", "publish", *cfg]) == EXIT_INVALID
    assert "litefleet keys rotate" in capsys.readouterr().err
    assert main(["trust", "show", "--json", *cfg]) == 0
    assert json.loads(capsys.readouterr().out) == []
    with sqlite3.connect(cloud_env.db) as db:
        assert db.execute("SELECT count(*) FROM roots").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == 0


def test_rotation_is_stored_bundled_and_audited(cloud_env: CloudEnv, tmp_path, capsys) -> None:
    cfg = ["--config", str(cloud_env.config)]
    new, _, new_pub = new_key(cloud_env.root / "k2")
    old_pub = cloud_env.root / "keys" / "release.pub"
    old_pub.write_text(cloud_env.key.public.hex)
    assert (
        main(
            [
                "keys",
                "rotate",
                "--add",
                str(new_pub),
                "--remove",
                str(old_pub),
                "--sign",
                str(cloud_env.root / "keys" / "release.key"),
                "--json",
                *cfg,
            ]
        )
        == 0
    )
    written = json.loads(capsys.readouterr().out)
    assert written["version"] == 2
    assert written["release_keys"] == {"keys": [new.public.hex], "threshold": 1}
    assert written["root_keys"] == {"keys": [cloud_env.key.public.hex], "threshold": 1}
    assert json.loads(Path(written["file"]).read_text())["signed"]["version"] == 2

    # the next release is signed by the new key, and the bundle carries the chain
    cloud_env.config.write_text(
        cloud_env.config.read_text().replace("keys/release.key", "k2/release.key")
    )
    assert (
        main(
            [
                "release",
                str(DIGITS),
                "--name",
                "digits",
                "--version",
                "1",
                "--profile",
                "x86-gateway",
                *cfg,
            ]
        )
        == 0
    )
    out = tmp_path / "bundle"
    assert main(["deploy", "digits@1", "--device", "cam-1", "--out", str(out), *cfg]) == 0
    capsys.readouterr()
    trusted, walked = walk_chain(
        implicit_root((cloud_env.key.public,), 1),
        (out / "roots.json").read_bytes(),
        datetime.now(UTC),
    )
    assert [r.version for r in walked] == [2]
    assert [k.hex for k in trusted.root.release_keys] == [new.public.hex]

    assert main(["audit", "--json", *cfg]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["action"], r["target"]) for r in rows] == [
        ("keys.rotate", "root v2"),
        ("release", "digits@1/x86-gateway"),
        ("deploy", f"{rows[2]['target'].split('/')[0]}/cam-1"),
    ]
    assert rows[0]["sha256"] == written["sha256"]
    assert main(["audit", *cfg]) == 0
    assert "keys.rotate" in capsys.readouterr().out


def test_trust_publish_retains_the_chain_on_the_root_topic(  # type: ignore[no-untyped-def]
    tmp_path, mosquitto, mqtt_subscriber, capsys
) -> None:
    root = tmp_path / "cloud"
    (root / "keys").mkdir(parents=True)
    key = SigningKey.generate()
    save_signing_key(key, root / "keys" / "release.key")
    config = write_config(root, mqtt_port=mosquitto.port)
    cfg = ["--config", str(config)]
    for _ in range(2):  # two renewals: same keys, new versions
        assert main(["keys", "rotate", "--sign", str(root / "keys" / "release.key"), *cfg]) == 0
    assert main(["trust", "publish", *cfg]) == 0
    assert "litefleet/v1/trust/root" in capsys.readouterr().out
    sub = mqtt_subscriber(mosquitto, ["litefleet/v1/trust/root"])  # subscribes afterwards
    assert sub.wait_for(lambda ms: len(ms) == 1, 10)
    message = sub.snapshot()[0]
    assert message.retain
    _, walked = walk_chain(implicit_root((key.public,), 1), message.payload, datetime.now(UTC))
    assert [r.version for r in walked] == [2, 3]
    assert main(["trust", "show", *cfg]) == 0
    assert capsys.readouterr().out.count("root v") == 2
