"""What `serve`'s HTTP port tells a monitoring system: `/healthz` and `/metrics`.

`/metrics` is Prometheus text, read from the store at each scrape (so every `serve` process
sharing a store reports the same figures):

    litefleet_devices{state="online"|"offline"}          known devices by liveness
    litefleet_records_ingested_total{kind=...}           telemetry, events, updates stored once
    litefleet_records_quarantined_total                  messages refused by the ingester
    litefleet_records_duplicate_total                    redeliveries stored before
    litefleet_rollouts{state=...}                        running, paused, completed, aborted
    litefleet_ingest_lag_seconds                         received - device ts, newest record
    litefleet_devices_by_root{version=...}               devices by the root version they report
    litefleet_upload_grants_total{outcome=...}           granted, refused, untrusted (counters)
    litefleet_broker_connected                           1 when this process has the broker

`/healthz` is JSON: 200 with {"status": "ok"} when the store answers and the broker is
connected, 200 with "degraded" when the broker is not, 503 when the store does not answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from cloud.rollout import STATES
from cloud.samples.grants import GRANT_OUTCOMES
from cloud.store import StoreRefused, open_store
from cloud.store.counters import all_counters
from cloud.store.devices import liveness_counts, root_version_counts
from cloud.store.records import newest_lag
from cloud.store.rollouts import counts_by_state

__all__ = ["FleetCollector", "HealthEndpoints", "Response"]

log = logging.getLogger(__name__)

INGESTED_KINDS = ("telemetry", "events", "updates")
QUARANTINED = "quarantined"  # a counter another part of ingest adds; 0 while it has none


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


class FleetCollector(Collector):
    """Reads the store at each scrape; a store that does not answer yields no samples."""

    def __init__(
        self, store: object, offline_after_s: float, broker_connected: Callable[[], bool]
    ) -> None:
        self.store = store  # what `open_store` takes: the [store] config, a URL or a path
        self.offline_after_s = offline_after_s
        self.broker_connected = broker_connected

    def collect(self) -> Iterator[Metric]:
        store = open_store(self.store)
        try:
            with store.connect() as conn:
                yield from self._collect(conn, time.time())
        finally:
            store.close()

    def _collect(self, conn: Connection, now: float) -> Iterator[Metric]:
        counters = all_counters(conn)
        online, known = liveness_counts(conn, now - self.offline_after_s)
        devices = GaugeMetricFamily(
            "litefleet_devices", "Known devices by liveness", labels=["state"]
        )
        devices.add_metric(["online"], online)
        devices.add_metric(["offline"], known - online)
        yield devices
        ingested = CounterMetricFamily(
            "litefleet_records_ingested", "Device messages stored (each once)", labels=["kind"]
        )
        for kind in INGESTED_KINDS:
            ingested.add_metric([kind], counters.get(f"stored.{kind}", 0))
        yield ingested
        yield CounterMetricFamily(
            "litefleet_records_quarantined",
            "Device messages the ingester refused and set aside",
            value=counters.get(QUARANTINED, 0),
        )
        yield CounterMetricFamily(
            "litefleet_records_duplicate",
            "Redelivered device messages that were stored before",
            value=counters.get("duplicates", 0),
        )
        by_state = counts_by_state(conn)
        rollouts = GaugeMetricFamily("litefleet_rollouts", "Rollouts by state", labels=["state"])
        for state in STATES:
            rollouts.add_metric([state], by_state.get(state, 0))
        yield rollouts
        lag = newest_lag(conn)
        yield GaugeMetricFamily(
            "litefleet_ingest_lag_seconds",
            "Seconds from a device's timestamp to storage, newest record",
            value=max(0.0, lag) if lag is not None else 0.0,
        )
        roots = GaugeMetricFamily(
            "litefleet_devices_by_root",
            "Devices by the root version they report (0: not reported)",
            labels=["version"],
        )
        for version, n in root_version_counts(conn).items():
            roots.add_metric([str(version)], n)
        yield roots
        grants = CounterMetricFamily(
            "litefleet_upload_grants",
            "Devices' sample-upload requests by what the active controller answered",
            labels=["outcome"],
        )
        for outcome in GRANT_OUTCOMES:
            grants.add_metric([outcome], counters.get(f"grants.{outcome}", 0))
        yield grants
        yield GaugeMetricFamily(
            "litefleet_broker_connected",
            "1 when this serve process is connected to the broker",
            value=1 if self.broker_connected() else 0,
        )


class HealthEndpoints:
    """The `/healthz` and `/metrics` routes for the HTTP server."""

    def __init__(
        self, store: object, offline_after_s: float, broker_connected: Callable[[], bool]
    ) -> None:
        self.store = store
        self.broker_connected = broker_connected
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(store, offline_after_s, broker_connected))

    def routes(self) -> dict[str, Callable[[], Response]]:
        return {"/healthz": self.healthz, "/metrics": self.metrics}

    def metrics(self) -> Response:
        try:
            body = generate_latest(self.registry)
        except (SQLAlchemyError, StoreRefused) as e:
            log.warning("metrics: the store did not answer: %s", e)
            return Response(503, "text/plain; charset=utf-8", f"store: {e}\n".encode())
        return Response(200, "text/plain; version=0.0.4; charset=utf-8", body)

    def healthz(self) -> Response:
        try:
            store = open_store(self.store)
            try:
                store.ping()
            finally:
                store.close()
        except (SQLAlchemyError, StoreRefused) as e:
            return _json(503, {"status": "failing", "store": str(e), "broker": self._broker()})
        broker = self._broker()
        return _json(
            200,
            {
                "status": "ok" if broker == "connected" else "degraded",
                "store": "ok",
                "broker": broker,
            },
        )

    def _broker(self) -> str:
        return "connected" if self.broker_connected() else "unreachable"


def _json(status: int, body: dict[str, str]) -> Response:
    return Response(status, "application/json", json.dumps(body).encode() + b"\n")
