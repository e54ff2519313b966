"""The pure root core: TUF's rule for root N+1, walking chains, and the refusal of each attack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.documents import format_time
from shared.envelope import sign_envelope
from shared.errors import BadSignature, Expired, MalformedDocument, VersionNotNewer
from shared.keys import SigningKey
from shared.root import (
    MissingRoot,
    Root,
    TrustedRoot,
    build_chain,
    implicit_root,
    self_signed_root,
    update_root,
    walk_chain,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def make_root(
    version: int,
    release: list[SigningKey],
    roots: list[SigningKey],
    signers: list[SigningKey],
    *,
    expires: timedelta = timedelta(days=365),
    threshold: int = 1,
    root_threshold: int = 1,
) -> dict:  # type: ignore[type-arg]
    root = Root(
        version,
        format_time(NOW),
        format_time(NOW + expires),
        tuple(k.public for k in release),
        threshold,
        tuple(k.public for k in roots),
        root_threshold,
    )
    return sign_envelope(root.to_signed(), signers)


def chain(*envelopes: dict) -> bytes:  # type: ignore[type-arg]
    return json.dumps(build_chain(list(envelopes))).encode()


@pytest.fixture
def k1() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def v1(k1: SigningKey) -> TrustedRoot:
    return implicit_root((k1.public,), 1)


def test_next_root_signed_by_old_and_new_root_keys_is_trusted(k1, v1) -> None:
    k2 = SigningKey.generate()
    v2 = update_root(v1, make_root(2, [k2], [k2], [k1, k2]))
    assert v2.version == 2
    assert [k.hex for k in v2.root.release_keyring().keys] == [k2.public.hex]


def test_root_signed_only_by_new_keys_is_refused(v1) -> None:
    k2 = SigningKey.generate()
    with pytest.raises(BadSignature, match="root version 1's root keys"):
        update_root(v1, make_root(2, [k2], [k2], [k2]))


def test_root_signed_only_by_old_keys_is_refused(k1, v1) -> None:
    k2 = SigningKey.generate()
    with pytest.raises(BadSignature, match="its own root keys"):
        update_root(v1, make_root(2, [k2], [k2], [k1]))


def test_threshold_of_old_root_keys_is_required(k1) -> None:
    k1b = SigningKey.generate()
    start = update_root(
        implicit_root((k1.public, k1b.public), 2),
        make_root(2, [k1], [k1, k1b], [k1, k1b], root_threshold=2),
    )
    with pytest.raises(BadSignature, match="1 valid signature"):
        update_root(start, make_root(3, [k1], [k1, k1b], [k1], root_threshold=1))


def test_rollback_and_fork_are_refused_and_the_same_root_is_a_no_op(k1, v1) -> None:
    k2 = SigningKey.generate()
    env2 = make_root(2, [k2], [k1], [k1])
    v2 = update_root(v1, env2)
    v3 = update_root(v2, make_root(3, [k1], [k1], [k1]))
    with pytest.raises(VersionNotNewer, match="rollback"):
        walk_chain(v3, chain(env2), NOW)
    fork = make_root(3, [k2], [k1], [k1])
    with pytest.raises(VersionNotNewer, match="fork"):
        walk_chain(v3, chain(env2, fork), NOW)
    assert update_root(v2, env2) is v2


def test_gap_in_the_chain_is_refused(k1, v1) -> None:
    with pytest.raises(MissingRoot, match="version 2 is missing"):
        update_root(v1, make_root(3, [k1], [k1], [k1]))


def test_expired_last_root_is_refused_but_expired_ones_are_walked_through(k1, v1) -> None:
    stale = make_root(2, [k1], [k1], [k1], expires=-timedelta(days=1))
    with pytest.raises(Expired, match="root version 2 expired"):
        walk_chain(v1, chain(stale), NOW)
    fresh = make_root(3, [k1], [k1], [k1])
    trusted, walked = walk_chain(v1, chain(stale, fresh), NOW)
    assert trusted.version == 3 and [r.version for r in walked] == [2, 3]


def test_chain_of_five_rotations_is_walked_in_order(k1, v1) -> None:
    keys = [k1] + [SigningKey.generate() for _ in range(5)]
    envs = [
        make_root(n, [keys[n - 1]], [keys[n - 1]], [keys[n - 2], keys[n - 1]]) for n in range(2, 7)
    ]
    trusted, walked = walk_chain(v1, chain(*envs), NOW)
    assert [r.version for r in walked] == [2, 3, 4, 5, 6]
    assert trusted.root.release_keys == (keys[5].public,)
    again, none = walk_chain(trusted, chain(*envs), NOW)  # the retained chain again: a no-op
    assert again is trusted and none == []


def test_malformed_roots_name_the_field(k1, v1) -> None:
    env = make_root(2, [k1], [k1], [k1])
    env["signed"]["extra"] = 1
    with pytest.raises(MalformedDocument, match=r"roots\[0\]: signed.extra: unknown field"):
        walk_chain(v1, chain(env), NOW)
    with pytest.raises(MalformedDocument):
        walk_chain(v1, b'{"schema": "litefleet.root-chain/1", "roots": []}', NOW)
    with pytest.raises(MalformedDocument):
        walk_chain(v1, b"[" * 10, NOW)


def test_provisioned_root_must_be_self_signed(k1) -> None:
    other = SigningKey.generate()
    good = json.dumps(make_root(1, [k1], [k1], [k1])).encode()
    assert self_signed_root(good).version == 1
    with pytest.raises(BadSignature):
        self_signed_root(json.dumps(make_root(1, [k1], [k1], [other])).encode())


def test_a_refusal_names_a_revoked_key_only_when_its_signature_is_valid(k1) -> None:
    from shared.keys import Keyring, RevokedKey
    from shared.verify import verify_signed

    k2 = SigningKey.generate()
    ring = Keyring((k2.public,), 1, (RevokedKey(k1.public, 3),))
    signed_by_k1 = sign_envelope({"x": 1}, [k1])
    with pytest.raises(
        BadSignature,
        match=rf"revoked key {k1.keyid[:16]} \(revoked by root "
        r"version 3\)",
    ):
        verify_signed(signed_by_k1, ring, "release")
    forged = sign_envelope({"x": 1}, [SigningKey.generate()])
    forged["signatures"][0]["keyid"] = k1.keyid  # claims the revoked key, signature does not fit
    with pytest.raises(BadSignature) as refused:
        verify_signed(forged, ring, "release")
    assert "revoked" not in str(refused.value)
    assert verify_signed(sign_envelope({"x": 1}, [k2]), ring, "release") == {"x": 1}
