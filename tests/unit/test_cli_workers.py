"""`fleet workers`, run as a user would (a real `fleet` process), against heartbeats written into its store."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

import fleet
from fleet.settings import load_settings
from fleet.store import db, workers
from fleet.store.db import open_store
from fleet.store.models import Run, Shard, Worker
from fleet.vocabulary import utcnow
from tests.conftest import FleetCli


@pytest.fixture
def cli(tmp_path, tmp_source):
    return FleetCli(tmp_path / "data", tmp_source, tmp_path)


def store(cli: FleetCli):
    return open_store(load_settings(flags={"repo": str(cli.repo), "data_dir": str(cli.data_dir)}, environ={},
                                    cwd=cli.cwd))


def seed_workers(cli: FleetCli) -> None:
    """Three workers: one online running a shard, one of an older fleet, one killed a minute ago."""
    with store(cli):
        workers.record_heartbeat("fleet@alpha", "alpha", 101, fleet.__version__, 4, ["fleet", "checks"], 1)
        workers.record_heartbeat("fleet@old", "beta", 202, "0.0.1", 8, ["fleet"], 0,
                                 refusing=f"fleet 0.0.1 here, the controller runs {fleet.__version__}")
        workers.record_heartbeat("fleet@killed", "gamma", 303, fleet.__version__, 2, ["fleet"], 2)
        db.session.execute(update(Worker).where(Worker.name == "fleet@killed")
                           .values(heartbeat_at=utcnow() - timedelta(seconds=90)))
        run = Run(kind="check", trigger="manual", status="running")
        db.session.add(run)
        db.session.flush()
        db.session.add(Shard(run_id=run.id, index=0, hosts='["web1"]', status="running", worker="fleet@alpha"))
        db.session.commit()


def test_no_worker_yet_says_how_to_start_one(cli):
    answer = cli("workers")
    assert answer.code == 0, answer.stderr
    assert "no worker has reported yet" in answer.stdout and "fleet worker" in answer.stdout
    listed = cli("workers", "--json")
    assert listed.code == 0 and json.loads(listed.stdout) == {"version": fleet.__version__, "workers": []}


def test_the_table_shows_state_version_capacity_running_shards_and_heartbeat(cli):
    seed_workers(cli)
    answer = cli("workers")
    assert answer.code == 0, answer.stderr
    lines = answer.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "VERSION", "CAPACITY", "RUNNING", "HEARTBEAT", "QUEUES", "REFUSING"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert [line.split()[0] for line in lines[1:4]] == ["fleet@alpha", "fleet@old", "fleet@killed"], \
        "online workers first, then lost ones"
    alpha = rows["fleet@alpha"].split()
    assert alpha[1:5] == ["online", fleet.__version__, "4", "1"], "running counts the shards table's running shards"
    assert alpha[5:8] == [alpha[5], "ago", "fleet,checks"] and alpha[5].endswith("s")
    assert "0.0.1 (differs)" in rows["fleet@old"] and "the controller runs" in rows["fleet@old"]
    killed = rows["fleet@killed"].split()
    assert killed[1] == "lost" and killed[4] == "0" and killed[5] == "1m"
    assert f"2 online, capacity 4 shard(s) at once (this fleet is {fleet.__version__})" in answer.stdout, \
        "an older fleet's worker refuses shards: it is no capacity"
    assert "fleet@old runs fleet 0.0.1" in answer.stdout
    assert "lost (no heartbeat for over 30 s): fleet@killed" in answer.stdout


def test_json_has_every_worker_with_its_derived_state(cli):
    seed_workers(cli)
    answer = cli("workers", "--json")
    assert answer.code == 0, answer.stderr
    listed = {w["name"]: w for w in json.loads(answer.stdout)["workers"]}
    assert listed["fleet@alpha"]["state"] == "online" and listed["fleet@alpha"]["running"] == 1
    assert listed["fleet@alpha"]["queues"] == ["fleet", "checks"] and listed["fleet@alpha"]["refusing"] is None
    assert listed["fleet@old"]["version_ok"] is False and listed["fleet@old"]["version"] == "0.0.1"
    assert listed["fleet@killed"]["state"] == "lost"
    assert 85 <= listed["fleet@killed"]["heartbeat_age_seconds"] < 600
