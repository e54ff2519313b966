"""The fleet's shared root-chain verdicts (`cloud.sim.trust`): one walk per payload and root
walked from, each device moving on from its own root; refusals and expiry as the agent's."""

from __future__ import annotations

from datetime import timedelta

from cloud.sim.trust import RootChains, Trust
from shared.keys import SigningKey
from shared.root import implicit_root, walk_chain
from tests.shared.test_root import NOW, chain, make_root


def test_identical_chains_are_walked_once_per_root_and_devices_move_on_independently() -> None:
    k1, k2, k3 = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    v1 = Trust.of(implicit_root((k1.public,), 1))
    r2 = make_root(2, [k2], [k1], [k1])
    r3 = make_root(3, [k3], [k1], [k1])
    chains = RootChains()
    short, full = chain(r2), chain(r2, r3)

    a = chains.walk(v1, short, NOW).adopt  # device a saw the chain up to v2
    assert a is not None and a.version == 2 and a.keyring.keys == (k2.public,)
    b = v1  # device b was away: it still trusts v1
    assert chains.walk(v1, short, NOW).adopt is a  # a third device: the shared verdict
    assert chains.walks == 1

    a3, b3 = chains.walk(a, full, NOW).adopt, chains.walk(b, full, NOW).adopt
    assert a3 is not None and b3 is not None
    assert (a3.version, b3.version) == (3, 3) and b3.keyring.keys == (k3.public,)
    assert chains.walks == 3  # the same payload from two different roots: two walks
    assert chains.walk(a3, full, NOW).adopt is None  # nothing newer: a no-op
    assert walk_chain(b.root, full, NOW)[0].sha256 == b3.root.sha256  # as the agent walks it


def test_a_forged_chain_is_refused_every_time_and_an_expired_root_once_it_expires() -> None:
    k1, k2, thief = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    v1 = Trust.of(implicit_root((k1.public,), 1))
    forged = chain(make_root(2, [thief], [thief], [thief]))
    chains = RootChains()
    for _ in range(3):
        verdict = chains.walk(v1, forged, NOW)
        assert verdict.adopt is None and verdict.refused is not None
        assert verdict.refused.reason == "bad_signature"
    assert chains.walks == 1
    # the control: the same root signed by the trusted root key is adopted
    assert chains.walk(v1, chain(make_root(2, [thief], [thief], [k1, thief])), NOW).adopt

    brief = chain(make_root(2, [k2], [k1], [k1], expires=timedelta(hours=1)))
    assert chains.walk(v1, brief, NOW).adopt is not None
    late = chains.walk(v1, brief, NOW + timedelta(hours=2))  # the shared verdict, re-checked
    assert late.adopt is None and late.refused is not None and late.refused.reason == "expired"
