"""The device's trust store: persisted atomically, shared between processes, refusing loudly.

Also the offline path: a `roots.json` chain next to a deployment (what `litefleet deploy --out`
writes) is walked by `litefleet-agent apply` before the deployment is verified.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agent.cli import main
from agent.config import ConfigInvalid
from agent.update.state import read_update_state
from agent.update.trust import TRUST_FILE, TrustStore
from localio.cli import EXIT_REJECTED
from shared.documents import format_time
from shared.envelope import sign_envelope
from shared.errors import BadSignature, Expired
from shared.keys import SigningKey
from shared.root import Root, build_chain

from .conftest import DIGITS, DIGITS_FT, Bench, load, sha, write_config


def make_root(version, release, roots, signers, expires=timedelta(days=365), now=None):  # type: ignore[no-untyped-def]
    now = now or datetime.now(UTC)
    root = Root(
        version,
        format_time(now),
        format_time(now + expires),
        tuple(k.public for k in release),
        1,
        tuple(k.public for k in roots),
        1,
    )
    return sign_envelope(root.to_signed(), signers)


def chain(*envelopes) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps(build_chain(list(envelopes))).encode()


def test_walked_root_is_persisted_and_survives_a_restart(tmp_path, keys):
    config = load(write_config(tmp_path, keys))
    k2 = SigningKey.generate()
    store = TrustStore(config.trust, config.state_dir)
    walked = store.offer(chain(make_root(2, [k2], keys, keys)))
    assert [r.version for r in walked] == [2]
    state = json.loads((config.state_dir / TRUST_FILE).read_text())
    assert state["root"]["signed"]["version"] == 2
    assert state["revoked"] == [{"key": keys[0].public.hex, "version": 2}]
    reopened = TrustStore(config.trust, config.state_dir)  # the next start
    ring = reopened.keyring()
    assert [k.hex for k in ring.keys] == [k2.public.hex]
    assert [(r.key.hex, r.version) for r in ring.revoked] == [(keys[0].public.hex, 2)]
    assert not list(config.state_dir.glob(".trust.json.*.tmp"))


def test_a_root_written_by_another_process_is_seen_by_the_running_one(tmp_path, keys):
    config = load(write_config(tmp_path, keys))
    daemon = TrustStore(config.trust, config.state_dir)
    assert daemon.current().version == 1
    TrustStore(config.trust, config.state_dir).offer(chain(make_root(2, keys, keys, keys)))
    assert daemon.current().version == 2
    with pytest.raises(Exception, match="rollback"):  # the daemon now refuses what is older
        daemon.offer(chain(make_root(1, keys, keys, keys)))


def test_an_unreadable_trust_file_refuses_every_deployment(tmp_path, keys, device_factory):
    path = write_config(tmp_path, keys)
    config = load(path)
    TrustStore(config.trust, config.state_dir).offer(chain(make_root(2, keys, keys, keys)))
    state = config.state_dir / TRUST_FILE
    state.write_text(state.read_text().replace('"version": 2', '"version": 3'))  # sig breaks
    with pytest.raises(BadSignature, match="unreadable"):
        TrustStore(config.trust, config.state_dir).keyring()
    with pytest.raises(BadSignature, match="unreadable"):  # nor walked from the config's root
        TrustStore(config.trust, config.state_dir).offer(chain(make_root(2, keys, keys, keys)))
    device = device_factory(path)
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    outcome = device.updater.handle_deployment(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 1))
    )
    assert (outcome.phase, outcome.reason) == ("rejected", "bad_signature")
    assert "unreadable" in outcome.detail


def test_an_expired_trusted_root_refuses_deployments_until_a_newer_root_comes(
    tmp_path, keys, device_factory
):
    path = write_config(tmp_path, keys)
    config = load(path)
    later = datetime.now(UTC) + timedelta(days=10)
    TrustStore(config.trust, config.state_dir).offer(
        chain(make_root(2, keys, keys, keys, expires=timedelta(days=5)))
    )
    device = device_factory(path, now=lambda: later)  # ten days on, root 2 has expired
    device.updater.recover()
    bench = Bench(tmp_path / "artifacts", keys)
    release = bench.release(DIGITS_FT.read_bytes(), 1, lifetime=timedelta(days=30))
    outcome = device.updater.handle_deployment(
        bench.deployment(release, lifetime=timedelta(days=30))
    )
    assert (outcome.phase, outcome.reason) == ("rejected", "expired")
    assert "root version 2 expired" in outcome.detail
    store = TrustStore(config.trust, config.state_dir, now=lambda: later)
    with pytest.raises(Expired):
        store.keyring()
    store.offer(chain(make_root(3, keys, keys, keys, now=later)))
    outcome = device.updater.handle_deployment(
        bench.deployment(release, lifetime=timedelta(days=30))
    )
    assert outcome.phase == "committed", outcome


def test_config_may_name_a_signed_root_instead_of_keys(tmp_path, keys):
    k2 = SigningKey.generate()
    (tmp_path / "root.json").write_text(json.dumps(make_root(4, [k2], keys, keys)))
    text = write_config(tmp_path, keys).read_text()
    trust_line = next(line for line in text.splitlines() if line.startswith("keys = "))
    path = tmp_path / "agent.toml"
    path.write_text(text.replace(trust_line, f'root = "{tmp_path / "root.json"}"'))
    config = load(path)
    assert config.trust.initial_root().version == 4
    assert [k.hex for k in TrustStore(config.trust, config.state_dir).keyring().keys] == [
        k2.public.hex
    ]
    path.write_text(text.replace(trust_line, f'{trust_line}\nroot = "{tmp_path / "root.json"}"'))
    with pytest.raises(ConfigInvalid, match="either keys"):
        load(path)
    (tmp_path / "root.json").write_text(json.dumps(make_root(4, [k2], keys, [k2])))
    path.write_text(text.replace(trust_line, f'root = "{tmp_path / "root.json"}"'))
    with pytest.raises(ConfigInvalid, match="not a root signed by its own root keys"):
        load(path)


def test_apply_walks_the_bundles_root_chain_first(tmp_path, keys, capsys):
    config = write_config(tmp_path, keys)
    k2 = SigningKey.generate()
    bundle = tmp_path / "bundle"
    bench = Bench(bundle, [k2], base_url="http://127.0.0.1:9/nowhere")
    (bundle / "deployment.json").write_bytes(
        bench.deployment(bench.release(DIGITS_FT.read_bytes(), 2))
    )
    code = main(["apply", "--config", str(config), str(bundle / "deployment.json")])
    assert code == EXIT_REJECTED and "bad_signature" in capsys.readouterr().err  # control
    (bundle / "roots.json").write_bytes(chain(make_root(2, [k2], keys, keys)))
    code = main(["apply", "--config", str(config), str(bundle / "deployment.json"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["active"] and out["version"] == 2, out
    identity, _ = read_update_state(load(config))
    assert identity.sha256 == sha(DIGITS_FT.read_bytes()) != sha(DIGITS.read_bytes())


def test_apply_refuses_a_bundle_whose_root_is_forged(tmp_path, keys, capsys):
    config = write_config(tmp_path, keys)
    stranger = SigningKey.generate()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "roots.json").write_bytes(chain(make_root(2, [stranger], [stranger], [stranger])))
    (bundle / "deployment.json").write_text("{}")
    code = main(["apply", "--config", str(config), str(bundle / "deployment.json")])
    err = capsys.readouterr().err
    assert code == EXIT_REJECTED
    assert "root refused: bad_signature" in err and err.count("\n") == 1
    assert not (load(config).state_dir / TRUST_FILE).exists()


def test_keys_listed_twice_in_the_config_still_make_a_root(tmp_path, keys):
    path = write_config(tmp_path, keys + keys)  # accepted before roots existed: still accepted
    config = load(path)
    assert [k.hex for k in TrustStore(config.trust, config.state_dir).keyring().keys] == [
        keys[0].public.hex
    ]
