"""One owner for agent.db: the store declares and migrates every table and opens every
connection; the outbox, the journal and the command gate create nothing themselves."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

from agent.link.commands import CommandGate
from agent.outbox import Outbox
from agent.store import MIGRATIONS, open_existing, open_store, store_path
from agent.update.journal import UpdateJournal
from shared.keys import Keyring, SigningKey

REPO = Path(__file__).resolve().parents[2]
TABLES = {"outbox", "outbox_meta", "update_journal", "update_models", "command_nonces"}


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(str(path))
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_opening_the_store_creates_every_table_and_records_its_version(tmp_path):
    store = open_store(tmp_path)
    assert tables(store_path(tmp_path)) >= TABLES
    assert store.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_journal_from_before_interruptions_were_counted_is_migrated(tmp_path):
    path = store_path(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    old = sqlite3.connect(str(path))
    old.execute(
        "CREATE TABLE update_journal (id INTEGER PRIMARY KEY, rollout_id TEXT, "
        "model TEXT, version INTEGER, sha256 TEXT, phase TEXT, reason TEXT, detail TEXT, "
        "via TEXT, from_sha256 TEXT, prev_sha256 TEXT, deployment TEXT, started FLOAT, "
        "updated FLOAT, probation_started FLOAT)"
    )
    old.execute(
        "INSERT INTO update_journal (rollout_id, model, version, sha256, phase) "
        "VALUES ('r1', 'digits', 1, 'ab', 'probation')"
    )
    old.commit()
    old.close()
    store = open_store(tmp_path)
    journal = UpdateJournal(store)
    entry = journal.in_progress()
    assert entry is not None and (entry.rollout_id, entry.interruptions) == ("r1", 0)
    journal.update(entry.id, interruptions=1)
    assert journal.get(entry.id).interruptions == 1
    journal.close()
    store.close()


def test_parts_share_the_file_on_connections_the_store_opened(tmp_path):
    store = open_store(tmp_path)
    outbox = Outbox(store)
    journal = UpdateJournal(store)
    gate = CommandGate(store, Keyring((SigningKey.generate().public,)), "cam-01")
    assert tables(store_path(tmp_path)) >= TABLES
    journal.remember_model("ab" * 32, "digits", 3)
    reader = open_existing(tmp_path)  # another process's view (status): sees the commit
    assert reader is not None
    assert reader.execute("SELECT version FROM update_models").fetchone()[0] == 3
    reader.close()
    for part in (outbox, journal, gate):
        part.close()
    store.close()


def test_nothing_is_created_for_a_reader_of_a_missing_store(tmp_path):
    assert open_existing(tmp_path / "nowhere") is None
    assert not (tmp_path / "nowhere").exists()


def test_no_part_of_the_agent_opens_agent_db_or_creates_a_table_but_the_store():
    offenders = []
    for path in sorted((REPO / "agent").rglob("*.py")):
        if path == REPO / "agent" / "store.py":
            continue
        text = path.read_text()
        if "CREATE TABLE" in text or ".create(" in text or "add_column(" in text:
            offenders.append(f"{path.name}: creates a table")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
                if (owner, name) in {("sqlite3", "connect"), ("sqlite_utils", "Database")}:
                    offenders.append(f"{path.name}:{node.lineno}: opens a connection")
    assert offenders == []


def test_models_from_before_signers_were_kept_are_migrated_as_not_recorded(tmp_path):
    path = store_path(tmp_path)
    old = sqlite3.connect(str(path))
    old.execute(
        "CREATE TABLE update_models (sha256 TEXT PRIMARY KEY, name TEXT, version INTEGER, "
        "verified FLOAT)"
    )
    old.execute("INSERT INTO update_models VALUES (?, 'digits', 7, 0)", ["ab" * 32])
    old.commit()
    old.close()
    store = open_store(tmp_path)
    journal = UpdateJournal(store)
    record = journal.model("ab" * 32)
    assert record is not None
    assert (record.version, record.signers, record.distrusted) == (7, None, False)
    journal.remember_model("cd" * 32, "digits", 8, ["ef" * 32])
    assert journal.model("cd" * 32).signers == ("ef" * 32,)  # type: ignore[union-attr]
    journal.close()
    store.close()
