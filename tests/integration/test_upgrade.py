"""A user of release c403ef5 upgrades: the real `fleet` finds every run they had, and a real `fleet serve`
upgrades the database at start and says so in its log."""

from __future__ import annotations

import json

import pytest

from fleet.store.db import schema_head
from tests.conftest import FleetCli, ServeProcess
from tests.unit.test_migrations import C403EF5_DETAIL, C403EF5_RUNS, execute, migrate, recorded_revision


@pytest.fixture
def old_release(tmp_path, tmp_source, database_under_test):
    """A data directory whose database is release c403ef5's, with three runs, and no schema revision."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    url = database_under_test or f"sqlite:///{data_dir / 'fleet.db'}"
    migrate(url, "0001")
    execute(url, *C403EF5_RUNS, *C403EF5_DETAIL, "DROP TABLE alembic_version")
    return FleetCli(data_dir, tmp_source, tmp_path), url


def test_the_cli_finds_every_run_of_a_c403ef5_database_after_the_upgrade(old_release):
    cli, url = old_release

    before = cli("db", "current", "--json")
    upgraded = cli("db", "upgrade")
    listed = cli("runs", "--json")

    assert before.code == 1 and before.json()["current"] is None
    assert upgraded.code == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"database upgraded from 0001 to {schema_head()}"
    assert listed.code == 0, listed.stderr
    runs = {run["id"]: run for run in listed.json()["runs"]}
    assert sorted(runs) == [1, 2, 3]
    assert (runs[2]["kind"], runs[3]["status"]) == ("converge", "failed")
    assert json.loads(cli("db", "current", "--json").stdout)["up_to_date"] is True
    assert recorded_revision(url) == schema_head()


def test_any_command_upgrades_an_old_database_and_says_so_on_stderr(old_release):
    cli, _url = old_release

    listed = cli("runs", "--json")

    assert listed.code == 0, listed.stderr
    assert f"database upgraded from 0001 to {schema_head()}" in listed.stderr
    assert sorted(run["id"] for run in listed.json()["runs"]) == [1, 2, 3]


def test_fleet_serve_upgrades_an_old_database_at_start_and_logs_it(old_release):
    cli, url = old_release
    serve = ServeProcess(cli, poll_seconds=60)
    try:
        serve.start()
    finally:
        serve.stop()

    log = serve.log.read_text()
    assert f"database upgraded from 0001 to {schema_head()}" in log
    assert recorded_revision(url) == schema_head()
    # The old release's runs are all there; the started controller may have added its own commit check.
    ids = sorted(run["id"] for run in cli("runs", "--json").json()["runs"])
    assert ids[:3] == [1, 2, 3] and len(ids) <= 4, ids


def test_a_database_of_a_newer_fleet_is_refused_by_every_command(old_release):
    cli, url = old_release
    assert cli("db", "upgrade").code == 0
    execute(url, "UPDATE alembic_version SET version_num = '9999'")

    refused = cli("runs")

    assert refused.code == 1
    assert "schema revision 9999, newer than this fleet" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert recorded_revision(url) == "9999"
