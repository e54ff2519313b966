"""The root topic under `litefleet broker-config`'s ACL: every device reads it, only the cloud
writes it."""

from __future__ import annotations

import time

from tests.cloud.test_broker_config import secured  # noqa: F401  (the fixture)

ROOT = "litefleet/v1/trust/root"


def test_every_device_reads_the_root_chain_and_none_can_write_it(secured) -> None:  # noqa: F811
    _, _, c = secured
    cloud, a, b = c["cloud"], c["dev-a"], c["dev-b"]
    assert a.publish(ROOT, b"forged chain", retain=True) == 135  # not authorized
    assert cloud.publish(ROOT, b"the chain", retain=True) in (0, 16)  # 16: no subscribers yet
    assert a.subscribe(ROOT) == [1] and b.subscribe(ROOT) == [1]  # the retained message follows
    deadline = time.monotonic() + 10
    while not (a.messages and b.messages) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.messages == [(ROOT, b"the chain")] and b.messages == [(ROOT, b"the chain")]
