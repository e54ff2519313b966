"""The root topic under `litefleet broker-config`'s ACL: every device reads it, only the
operator (the cloud's `trust publish`) writes it."""

from __future__ import annotations

from tests.cloud.test_broker_config import (  # noqa: F401  (the fixtures)
    OPERATOR,
    Client,
    broker,
    clients,
    wait_until,
)

ROOT = "litefleet/v1/trust/root"


def test_every_device_reads_the_root_chain_and_none_can_write_it(
    clients: dict[str, Client],  # noqa: F811  (the fixture)
) -> None:
    operator, a, b = clients[OPERATOR], clients["dev-a"], clients["dev-b"]
    assert a.publish(ROOT, b"forged chain", retain=True) == 135  # not authorized
    assert operator.publish(ROOT, b"the chain", retain=True) in (0, 16)  # 16: no subscribers yet
    assert a.subscribe(ROOT) == [1] and b.subscribe(ROOT) == [1]  # the retained message follows
    assert wait_until(lambda: bool(a.messages and b.messages), timeout=10)
    assert a.messages == [(ROOT, b"the chain")] and b.messages == [(ROOT, b"the chain")]
