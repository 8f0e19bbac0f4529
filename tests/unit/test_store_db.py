"""Opening the store without the web app: what the CLI does."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest

from fleet.settings import load_settings
from fleet.store import queries
from fleet.store.db import db, open_store, sqlite_path


@pytest.mark.sqlite_only
def test_the_store_opens_alone_creating_its_tables_but_no_secret_key(tmp_path):
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ={},
                             cwd=tmp_path)
    with open_store(settings) as store:
        assert queries.runs_page().items == []
        assert db.engine.dialect.name == "sqlite"
        assert store.schema.before is None  # created, at this fleet's head
    assert not (tmp_path / "data" / "secret_key").exists()
    assert (tmp_path / "data" / "fleet.db").exists()


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ={},
                             cwd=tmp_path)
    with open_store(settings):
        assert db.session.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert db.session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_the_cli_never_imports_the_web_package():
    code = "import sys, fleet.cli; print(sorted(m for m in sys.modules if m.startswith('fleet.web')))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.sqlite_only
def test_the_store_keeps_its_directory_and_database_private_whatever_the_umask(tmp_path):
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ={},
                             cwd=tmp_path)
    old = os.umask(0o022)
    try:
        with open_store(settings):
            queries.runs_page()  # a connection: SQLite creates its -wal and -shm files
            data = tmp_path / "data"
            modes = {p.name: _mode(p) for p in data.iterdir()}
    finally:
        os.umask(old)
    assert _mode(tmp_path / "data") == 0o700
    assert modes == {"fleet.db": 0o600, "fleet.db-wal": 0o600, "fleet.db-shm": 0o600}


@pytest.mark.sqlite_only
def test_an_open_data_dir_of_an_older_fleet_is_made_private_with_a_log_line(tmp_path, caplog):
    data = tmp_path / "data"
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(data)}, environ={}, cwd=tmp_path)
    with open_store(settings):  # open while the older fleet's files are changed: SQLite keeps its -wal file
        queries.runs_page()
        for path, mode in [(data, 0o755), (data / "fleet.db", 0o644), (data / "fleet.db-wal", 0o644)]:
            path.chmod(mode)
        with caplog.at_level(logging.WARNING, logger="fleet.filemodes"), open_store(settings):
            assert queries.runs_page().items == []  # the data survived
        assert (_mode(data), _mode(data / "fleet.db"), _mode(data / "fleet.db-wal")) == (0o700, 0o600, 0o600)
    assert f"data directory {data} was open to other users" in caplog.text


def test_a_database_elsewhere_is_made_private_too(tmp_path):
    elsewhere = tmp_path / "db" / "fleet.sqlite"
    elsewhere.parent.mkdir()
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data"),
                                    "database_url": f"sqlite:///{elsewhere}"}, environ={}, cwd=tmp_path)
    old = os.umask(0o022)
    try:
        with open_store(settings):
            queries.runs_page()
    finally:
        os.umask(old)
    assert _mode(elsewhere) == 0o600
    assert sqlite_path("postgresql+psycopg://fleet@db/fleet") is None
    assert sqlite_path("sqlite://") is None


CORE_WITHOUT_FLASK = """
import sys
from pathlib import Path
from fleet import actions, controller, jobs, notify, revisions
from fleet.executor import dispatch, shard, worker
from fleet.settings import load_settings
from fleet.store import queries
from fleet.store.db import open_store
root = Path(sys.argv[1])
settings = load_settings(flags={"repo": str(root), "data_dir": str(root / "data")}, environ={}, cwd=root)
with open_store(settings):
    actions.request_run(actions.Actor("ada"), "check", "")
    print(len(queries.runs_page().items))
print(sorted(name for name in sys.modules if name.split(".")[0] in ("flask", "flask_sqlalchemy")))
"""


def test_the_core_opens_the_store_and_acts_without_importing_flask(tmp_path):
    done = subprocess.run([sys.executable, "-c", CORE_WITHOUT_FLASK, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1", "[]"]  # the run was queued; no Flask module was imported


def test_what_the_database_refuses_arrives_as_fleets_store_refused_and_still_as_the_librarys_error(tmp_path):
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError, IntegrityError

    from fleet.errors import StoreError, StoreRefused
    from fleet.store.db import Store

    store = Store.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    with store.bound():
        with pytest.raises(StoreRefused, match="nope") as missing:  # SQLite: no such table; PostgreSQL: no relation
            db.session.execute(text("SELECT * FROM nope"))
        # Still the library's own error (SQLite calls it operational, PostgreSQL a programming error).
        assert isinstance(missing.value, DatabaseError) and isinstance(missing.value, StoreError)
        db.session.rollback()
        db.session.execute(text("CREATE TABLE once (x INTEGER UNIQUE)"))
        db.session.execute(text("INSERT INTO once VALUES (1)"))
        with pytest.raises(IntegrityError) as twice:  # what the store's own code catches to try another way
            db.session.execute(text("INSERT INTO once VALUES (1)"))
        assert isinstance(twice.value, StoreRefused) and "unique" in str(twice.value).lower()
    store.close()
