"""Migrations: they build exactly the models' schema, carry a database of an older release (its rows
included) to head, and a database newer than this fleet is refused untouched."""

from __future__ import annotations

import importlib.util
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from fleet.errors import StoreError
from fleet.store import queries
from fleet.store.db import (
    Store,
    compare_column_type, db, engine_url, run_alembic, schema_head, target_metadata,
)
from fleet.store.models import Host, Revision, Run

POSTGRES = os.environ.get("FLEET_TEST_DATABASE_URL", "")
# SQLite always; PostgreSQL too when the run has a test database (the sqlite case then keeps SQLite).
DATABASES = [pytest.param("sqlite", marks=pytest.mark.sqlite_only)] + (["postgresql"] if POSTGRES else [])


@pytest.fixture
def database_url(request, tmp_path):
    """An empty database: an SQLite file, or the emptied PostgreSQL test database."""
    if request.param == "postgresql":
        from tests.conftest import reset_test_database, worker_database

        url = worker_database(POSTGRES)  # this xdist worker's own database
        reset_test_database(url)
        return url
    return f"sqlite:///{tmp_path / 'fleet.db'}"


def migrate(url: str, revision: str, verb: str = "upgrade") -> None:
    engine = create_engine(engine_url(url))
    try:
        with engine.begin() as connection:
            run_alembic(connection, verb, revision)
    finally:
        engine.dispose()


def schema_differences(url: str) -> list:
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": compare_column_type})
            return compare_metadata(context, target_metadata())
    finally:
        engine.dispose()


def recorded_revision(url: str) -> str | None:
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def column_names(url: str, table: str) -> set[str]:
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as connection:
            return {column["name"] for column in inspect(connection).get_columns(table)}
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = create_engine(engine_url(url))
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


# Rows shaped as release c403ef5 wrote them: every NOT NULL column given, none of the later ones.
C403EF5_RUNS = [
    "INSERT INTO runs (id, kind, trigger, status, revision_sha, \"limit\", requested_by, created_at, started_at,"
    " finished_at, error, hosts_total, hosts_in_sync, hosts_drifted, hosts_unreachable, hosts_failed,"
    " cancel_requested, cancel_reason, strategy) VALUES"
    f" ({n}, '{kind}', 'manual', '{status}', '{'ab' * 20}', '', 'cli:tess', '2026-11-27 10:0{n}:00',"
    f" '2026-11-27 10:0{n}:01', '2026-11-27 10:0{n}:30', '', 1, {int(status == 'successful')}, 0, 0, 0,"
    " false, '', 'linear')"
    for n, kind, status in ((1, "check", "successful"), (2, "converge", "successful"), (3, "check", "failed"))
]
C403EF5_DETAIL = [
    "INSERT INTO hosts (id, name, address, port, groups, in_inventory, status, message, drifted_tasks,"
    " verified_tasks, total_tasks, os, virtualization, key_blocked) VALUES"
    " (1, 'web1', '127.0.99.1', 22, 'web', true, 'in_sync', '', 0, 3, 3, 'Debian 12', 'container', false)",
    "INSERT INTO run_hosts (run_id, host, status, message, ok, changed, failed, skipped, unreachable, unverified)"
    " VALUES (1, 'web1', 'in_sync', '', 3, 0, 0, 0, 0, 0)",
    "INSERT INTO task_results (run_id, seq, host, task, action, status, unverified, handler, note, diff,"
    " duration, path) VALUES (1, 1, 'web1', 'Install nginx', 'apt', 'ok', false, false, '', '', 0.5,"
    " 'playbooks/site.yml:3')",
]


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_migrations_from_empty_build_exactly_the_models_schema(database_url):
    migrate(database_url, "head")

    assert schema_differences(database_url) == []
    assert recorded_revision(database_url) == schema_head()


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_every_migration_goes_down_and_up_again(database_url):
    migrate(database_url, "head")
    migrate(database_url, "base", verb="downgrade")
    assert recorded_revision(database_url) is None

    migrate(database_url, "head")
    assert schema_differences(database_url) == []


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_a_c403ef5_database_without_a_revision_is_recognised_upgraded_and_keeps_its_runs(database_url, caplog):
    migrate(database_url, "0001")
    execute(database_url, *C403EF5_RUNS, *C403EF5_DETAIL, "DROP TABLE alembic_version")

    with caplog.at_level(logging.INFO, logger="fleet.store"):
        store = Store.open(database_url)
    with store.bound():
        page = queries.runs_page(size=10)
        host = queries.get_host("web1")

    assert store.schema.before == "0001"
    assert f"database upgraded from 0001 to {schema_head()}" in caplog.text
    assert sorted(run.id for run in page) == [1, 2, 3]
    assert {run.id: run.status for run in page}[3] == "failed"
    assert (host.status, host.flapping, host.drift_since) == ("in_sync", "", None)
    assert schema_differences(database_url) == []


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_an_ff8a351_database_is_recognised_by_its_columns(database_url):
    migrate(database_url, "0002")
    execute(database_url, "DROP TABLE alembic_version")

    store = Store.open(database_url)

    assert store.schema.before == "0002"
    assert "lease_holder" in column_names(database_url, "runs")
    assert recorded_revision(database_url) == schema_head()


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_an_empty_database_is_created_at_head_without_running_the_migrations(database_url):
    store = Store.open(database_url)

    change = store.schema
    assert (change.before, change.after) == (None, schema_head())
    assert recorded_revision(database_url) == schema_head()
    assert schema_differences(database_url) == []


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_a_database_at_head_is_left_as_it_is(database_url, caplog):
    Store.open(database_url)

    with caplog.at_level(logging.INFO, logger="fleet.store"):
        store = Store.open(database_url)

    assert not store.schema.changed
    assert "upgraded" not in caplog.text


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_processes_opening_an_old_database_at_once_upgrade_it_once(database_url):
    migrate(database_url, "0001")
    execute(database_url, *C403EF5_RUNS, "DROP TABLE alembic_version")
    opener = ("import sys; from fleet.store.db import Store; "
              "print(Store.open(sys.argv[1]).schema.before)")
    processes = [subprocess.Popen([sys.executable, "-c", opener, database_url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(process.wait(timeout=60), *process.communicate()) for process in processes]

    assert [code for code, _out, _err in results] == [0, 0], [err for _code, _out, err in results]
    assert sorted(out.strip() for _code, out, _err in results) == ["0001", schema_head()]
    assert recorded_revision(database_url) == schema_head()
    assert schema_differences(database_url) == []


@pytest.mark.sqlite_only
def test_opening_waits_for_a_process_that_holds_the_write_lock_of_a_rollback_journal_database(tmp_path):
    """SQLite refuses the switch to WAL at once, without its busy timeout, while another process holds
    the write lock: the race of two processes opening an old database (one upgrading it) at once."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    migrate(url, "0001")
    holder = sqlite3.connect(tmp_path / "fleet.db", isolation_level=None, check_same_thread=False)
    assert holder.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, holder.execute, ("COMMIT",))
    release.start()
    try:
        started = time.monotonic()
        change = Store.open(url).schema
        waited = time.monotonic() - started
    finally:
        release.join()
        holder.close()

    assert (change.before, change.after) == ("0001", schema_head())
    assert waited >= 0.4  # it waited for the holder rather than failing or skipping the switch


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_a_database_newer_than_this_fleet_is_refused_untouched(database_url):
    Store.open(database_url)
    execute(database_url, "UPDATE alembic_version SET version_num = '9999'")

    with pytest.raises(StoreError, match="schema revision 9999, newer than this fleet"):
        Store.open(database_url)

    assert recorded_revision(database_url) == "9999"


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_outside_input_of_any_length_is_stored(database_url):
    long_name, long_limit, long_author = "h" * 300, ",".join(f"web{n}" for n in range(400)), "A. " * 200
    store = Store.open(database_url)
    with store.bound():
        db.session.add_all([
            Host(name=long_name, address=long_name, os="x" * 300),
            Run(kind="check", trigger="manual", status="queued", limit=long_limit, requested_by=long_author),
            Revision(sha="ab" * 20, status="valid", author=long_author, ref="r" * 300),
        ])
        db.session.commit()
        stored = queries.get_host(long_name)
        run = queries.runs_page().items[0]

    assert stored.name == long_name
    assert (run.limit, run.requested_by) == (long_limit, long_author)


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL's own session time zone; FLEET_TEST_DATABASE_URL is unset")
def test_postgresql_sessions_read_times_in_utc_whatever_the_server_time_zone(database_under_test):
    name = make_url(database_under_test).database
    execute(database_under_test, f"ALTER DATABASE {name} SET timezone TO 'Asia/Tokyo'")
    try:
        store = Store.open(database_under_test)
        with store.bound():
            db.session.add(Run(kind="check", trigger="manual", status="queued"))
            db.session.commit()
            zone = db.session.scalar(text("SHOW TimeZone"))
            created = db.session.scalar(text("SELECT created_at FROM runs"))
    finally:
        execute(database_under_test, f"ALTER DATABASE {name} RESET timezone")

    assert zone == "UTC"
    assert created.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_a_database_with_other_tables_than_fleets_is_refused_untouched(database_url):
    execute(database_url, "CREATE TABLE hosts (id INTEGER PRIMARY KEY, fqdn TEXT)")

    with pytest.raises(StoreError, match="tables that are not fleet's"):
        Store.open(database_url)

    assert column_names(database_url, "hosts") == {"id", "fqdn"}


def test_postgresql_without_its_driver_says_which_extra_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "psycopg" else real_find_spec(name))

    with pytest.raises(StoreError, match=r"pip install 'fleet\[postgres\]'"):
        Store.open("postgresql://fleet@127.0.0.1/fleet")


@pytest.mark.parametrize(("given", "used"), [
    ("postgresql://fleet:pw@db.example/fleet", "postgresql+psycopg://fleet:pw@db.example/fleet"),
    ("postgres://fleet@db.example:5433/fleet", "postgresql+psycopg://fleet@db.example:5433/fleet"),
    ("postgresql+psycopg://fleet@db.example/fleet", "postgresql+psycopg://fleet@db.example/fleet"),
    ("sqlite:////var/lib/fleet/fleet.db", "sqlite:////var/lib/fleet/fleet.db"),
])
def test_postgres_urls_use_psycopg_3(given, used):
    assert engine_url(given) == used


def test_the_head_named_for_the_quick_open_is_the_newest_migration():
    from fleet.store.migrations import HEAD

    assert HEAD == schema_head(), "a new migration under versions/ must be named in fleet/store/migrations HEAD"


@pytest.mark.sqlite_only
def test_opening_a_database_at_head_needs_no_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    Store.open(url).close()
    opener = ("import sys; from fleet.store.db import Store; Store.open(sys.argv[1]).close(); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", opener, url], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
