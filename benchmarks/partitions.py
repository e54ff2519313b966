"""What PostgreSQL's daily partitions cost ingest and buy prune (`cloud.store.partitions`).

One PostgreSQL server of the benchmark's own (Debian's `postgresql`, `initdb` in a temporary
folder, a free loopback port), two databases: `partitioned` (the current schema) and `plain`
(the schema before partitions, migration 0005: telemetry unique on (device_id, seq) by its
own primary key). Both get the same batches through ingest's own transaction
(`cloud.ingest.write_batch`: records, rollup, counters), in alternating rounds so that a busy
machine slows both alike; reported as records/s each and their ratio.

Then prune: `--days` days of telemetry on both, and `litefleet store prune`'s function
removes the oldest day: a DELETE of its rows on the plain store, a DROP of its partition (and
a DELETE of its keys) on the partitioned one. Prints one JSON line.

    PYTHONPATH=. .venv/bin/python benchmarks/partitions.py [--rounds 20] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sqlalchemy import delete

from cloud.ingest import IngestStats, write_batch
from cloud.store import Store, engine_url, records
from cloud.store.migrate import _config, migrate
from cloud.store.partitions import DAY_S, PARTITIONED, day_of, ensure_partitions
from cloud.store.records import prune
from cloud.store.schema import telemetry
from shared.messages import Message, ModelIdentity, TelemetryRecord, encode_message

MODEL = ModelIdentity("digits", 3, "ab" * 32)
Batch = list[tuple[Message, bytes]]  # messages with their payloads, as ingest writes them


def batches(round_: int, batch: int, devices: int, received: float) -> list[Batch]:
    """`batch`-record batches of telemetry, every device's seqs continuing round after round."""
    out: list[Batch] = []
    per_device = batch // devices
    for b in range(2):
        seq0 = (round_ * 2 + b) * per_device
        msgs = [
            TelemetryRecord(
                f"cam-{d:04d}", seq0 + s + 1, received - 5, MODEL, fps=29.5, latency_p95_ms=8.25
            )
            for d in range(devices)
            for s in range(per_device)
        ]
        out.append([(m, encode_message(m)) for m in msgs])
    return out


def write(store: Store, msgs: Batch, received: float, plain: bool) -> float:
    # the schema before partitions has no key tables: its inserts are the plain ON CONFLICT
    # (`records.insert_new` takes the keyed path for the kinds in its PARTITIONED)
    setattr(records, "PARTITIONED", {} if plain else PARTITIONED)  # noqa: B010
    started = time.perf_counter()
    with store.begin() as conn:
        write_batch(conn, msgs, received, IngestStats())
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="alternating rounds of writes")
    ap.add_argument("--batch", type=int, default=500, help="records per transaction")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--days", type=int, default=3, help="days of telemetry before prune")
    ap.add_argument("--rows-per-day", type=int, default=100_000)
    args = ap.parse_args()

    from alembic import command

    from tests.postgres_server import PostgresServer, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
        return 2
    server = PostgresServer(bindir)
    server.start()
    try:
        partitioned = Store(engine_url(server.create_database()))
        migrate(partitioned)
        plain = Store(engine_url(server.create_database()))
        with plain.begin() as conn:
            command.upgrade(_config(conn), "0005")
        now = time.time()
        seconds = {"partitioned": 0.0, "plain": 0.0}
        records = 0
        for r in range(args.rounds):
            pair = batches(r, args.batch, args.devices, now)
            order = [("plain", plain), ("partitioned", partitioned)]
            for name, store in order if r % 2 else reversed(order):
                for msgs in pair:
                    seconds[name] += write(store, msgs, now, store is plain)
            records += sum(len(m) for m in pair)
        rates = {k: records / v for k, v in seconds.items()}

        # prune: args.days days of telemetry, the oldest removed
        first = day_of(now) - 40
        with partitioned.begin() as conn:
            for d in range(args.days):
                ensure_partitions(conn, (first + d) * DAY_S + 1)
        fill = 5000  # records per transaction while filling the days
        per_day = args.rows_per_day // fill * fill
        rounds_per_day = per_day // (2 * fill)
        for d in range(args.days):
            at = (first + d) * DAY_S + 3600
            for r in range(rounds_per_day):
                for msgs in batches(1000 + d * rounds_per_day + r, fill, args.devices, at):
                    for store in (plain, partitioned):
                        write(store, msgs, at, store is plain)
        prune_s = {}
        removed = {}
        cutoff = (first + 1) * DAY_S
        started = time.perf_counter()  # what prune did before partitions: a DELETE
        with plain.begin() as conn:
            removed["plain"] = conn.execute(
                delete(telemetry).where(telemetry.c.received < cutoff)
            ).rowcount
        prune_s["plain"] = time.perf_counter() - started
        started = time.perf_counter()
        removed["partitioned"] = prune(partitioned, cutoff)["telemetry"]
        prune_s["partitioned"] = time.perf_counter() - started
        for store in (plain, partitioned):
            store.close()
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "backend": "postgresql",
                "records_per_round": records // args.rounds,
                "batch": args.batch,
                "ingest_records_per_s_plain": round(rates["plain"]),
                "ingest_records_per_s_partitioned": round(rates["partitioned"]),
                "ingest_ratio_partitioned_to_plain": round(
                    rates["partitioned"] / rates["plain"], 3
                ),
                "rows_per_day": per_day,
                "prune_rows": removed,
                "prune_s_plain": round(prune_s["plain"], 4),
                "prune_s_partitioned": round(prune_s["partitioned"], 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
