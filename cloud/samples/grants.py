"""Answering devices' capture requests with signed upload commands.

A device that holds captured samples publishes a `litefleet.capture/1` request on
`devices/{id}/capture` naming the files (`shared.samples`). `SampleGrants` (run by `serve`)
bounds and checks it, asks the artifact store for one upload URL per file under
`samples/<device>/` (S3: a presigned PUT; a file store: a grant `serve`'s HTTP server checks),
and publishes a signed `upload` command with those URLs on the device's `cmd` topic, valid for
`LIFETIME_S`. The device holds no credential; a URL writes one key and expires.

MQTT callbacks only enqueue (bounded; the excess is dropped and counted); one worker answers.
Every controller process subscribes, but only the one holding the controller lease answers
(`active`): a standby leaves the request to it (counted in `standby`), so two controllers
never grant one request twice. A request that arrives while no one holds the lease is lost;
the device asks again.

The upload command is signed when it is granted, so the `[signing] key` is checked against the
current root then (`cloud.signers`, read from the store at each request: a rotation needs no
restart). A key the root no longer lists, or one short of its threshold, grants nothing:
devices would refuse the command. One warning says why (again only when the reason changes),
and `untrusted` counts the requests left unanswered.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy.exc import SQLAlchemyError

from cloud.artifacts import ArtifactStore, StoreError
from cloud.commands.command import build_command
from cloud.config import CloudConfig, CloudRole
from cloud.mqtt import CloudLink
from cloud.signers import UntrustedSigner, check_signers
from cloud.store import StoreRefused, add_counter, describe_error, open_store
from shared.envelope import sign_envelope
from shared.errors import Rejected, Unavailable
from shared.keys import SigningKey
from shared.samples import parse_capture_request, sample_key
from shared.topics import Channel, fleet_subscription, parse_topic, topic

__all__ = ["GRANT_OUTCOMES", "LIFETIME_S", "SampleGrants", "upload_command"]

log = logging.getLogger(__name__)

LIFETIME_S = 900
QUEUE = 64
# what the active controller answered a capture request (store counters `grants.<outcome>`)
GRANT_OUTCOMES = ("granted", "refused", "untrusted")


def upload_command(
    store: ArtifactStore, key: SigningKey, device_id: str, files: dict[str, Any], now: float
) -> dict[str, Any]:
    """The signed `upload` command granting one URL per file."""
    urls = {name: store.put_url(sample_key(device_id, name), LIFETIME_S, now) for name in files}
    signed = build_command(
        device_id, "upload", datetime.fromtimestamp(now, UTC), LIFETIME_S, {"urls": urls}
    )
    return sign_envelope(signed, [key])


class SampleGrants:
    def __init__(
        self,
        config: CloudConfig,
        store: ArtifactStore,
        key: SigningKey,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.store = store
        self.key = key
        self.active = active  # whether this process is the active controller (holds the lease)
        self.granted = 0
        self.refused = 0
        self.dropped = 0
        self.standby = 0  # requests left to the active controller
        self.untrusted = 0  # requests unanswered: devices would refuse the signed command
        self._warned: str | None = None
        prefix = config.mqtt.topic_prefix
        self.link = CloudLink(
            config.mqtt,
            f"{config.mqtt.client_id}-samples-{secrets.token_hex(3)}",
            subscriptions=(fleet_subscription(Channel.CAPTURE, prefix),),
            on_message=self._offer,
            role=CloudRole.CONTROLLER,
        )
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE)
        self._thread = threading.Thread(target=self._run, name="sample-grants", daemon=True)

    def _offer(self, message: mqtt.MQTTMessage) -> None:
        try:
            self._queue.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        self._thread.start()
        self.link.start(timeout=None)

    def stop(self) -> None:
        self.link.stop()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.answer(*item)
            except Exception:
                log.exception("answering a capture request failed")

    def answer(self, name: str, payload: bytes) -> bool:
        if not self.active():
            self.standby += 1  # counted by the active controller, which answers
            log.info("a capture request on %s is left to the active controller", name[:200])
            return False
        prefix = self.config.mqtt.topic_prefix
        try:
            device_id = parse_topic(name, prefix).device_id
            request = parse_capture_request(payload, device_id)
        except Rejected as e:
            self._count("refused")
            log.warning("refused a capture request on %s: %s", name[:200], e)
            return False
        if not self._trusted():
            return False
        try:
            envelope = upload_command(self.store, self.key, device_id, request.files, time.time())
            self.link.publish(
                topic(device_id, Channel.CMD, prefix), json.dumps(envelope).encode("utf-8")
            )
        except (StoreError, Unavailable) as e:
            log.warning("no upload grant for %s: %s (the device asks again)", device_id, e)
            return False
        self._count("granted")
        log.info("granted %s upload URL(s) to %s", len(request.files), device_id)
        return True

    def _count(self, outcome: str) -> None:
        """One more `outcome` (a GRANT_OUTCOMES name): this process's attribute of that name
        and the store's `grants.<outcome>` counter (what /metrics reports, whichever process
        serves it); a store that does not answer loses only the stored count."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        try:
            with open_store(self.config.store) as db, db.begin() as conn:
                add_counter(conn, f"grants.{outcome}", 1)
        except (SQLAlchemyError, StoreRefused) as e:
            log.warning("could not count a %s upload grant: %s", outcome, describe_error(e))

    def _trusted(self) -> bool:
        """Whether devices accept what `key` signs under the current root; warns once per
        reason when they do not."""
        try:
            with open_store(self.config.store) as db:
                check_signers(db, [self.key], datetime.now(UTC))
        except UntrustedSigner as e:
            self._count("untrusted")
            if self._warned != str(e):
                self._warned = str(e)
                log.warning("no upload grants: %s", e)
            return False
        if self._warned is not None:
            self._warned = None
            log.info("upload grants resume: the current root lists the [signing] key")
        return True
