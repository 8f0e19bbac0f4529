"""Opening the store without the web app: what the CLI does."""

from __future__ import annotations

import subprocess
import sys

from fleet.settings import load_settings
from fleet.store import queries
from fleet.store.db import db, open_store


def test_the_store_opens_alone_creating_its_tables_but_no_secret_key(tmp_path):
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ={},
                             cwd=tmp_path)
    with open_store(settings) as app:
        assert queries.runs_page().items == []
        assert db.engine.dialect.name == "sqlite"
        assert app.blueprints == {}  # no pages, no API: only the store
    assert not (tmp_path / "data" / "secret_key").exists()
    assert (tmp_path / "data" / "fleet.db").exists()


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
