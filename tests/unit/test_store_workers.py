"""Workers and shards in a real store (SQLite here, PostgreSQL too when FLEET_TEST_DATABASE_URL is set):
heartbeats upserted, states derived from the clock, running shards counted in one query, capacity, shards."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from fleet.store import records, workers
from fleet.store.db import db
from fleet.store.models import Run, Shard, Worker
from fleet.vocabulary import utcnow
from tests.unit.store_fixtures import temporary_store

VERSION = "1.2.3"


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def beat(name: str, *, version: str = VERSION, concurrency: int = 2, pid: int = 100, refusing: str = "",
         queues=("fleet",), running: int = 0) -> None:
    workers.record_heartbeat(name, "box", pid, version, concurrency, list(queues), running, refusing)


def age_heartbeat(name: str, seconds: int) -> None:
    row = db.session.scalar(select(Worker).where(Worker.name == name))
    row.heartbeat_at = utcnow() - timedelta(seconds=seconds)
    db.session.commit()


def add_run_with_shards(*shards: dict, status: str = "running", waiting_reason: str = "") -> int:
    run = Run(kind="check", trigger="manual", status=status, waiting_reason=waiting_reason)
    db.session.add(run)
    db.session.flush()
    for index, fields in enumerate(shards):
        db.session.add(Shard(run_id=run.id, index=index, hosts=json.dumps(fields.pop("hosts", [])), **fields))
    db.session.commit()
    return run.id


def by_name(views) -> dict[str, workers.WorkerView]:
    return {view.name: view for view in views}


# --- the writer side ---------------------------------------------------------------------------------

def test_a_heartbeat_creates_the_worker_then_updates_the_same_row(store):
    beat("fleet@a", concurrency=2, queues=("fleet", "checks"))
    first = by_name(workers.list_workers(utcnow(), VERSION))["fleet@a"]
    beat("fleet@a", concurrency=4, running=1)
    listed = workers.list_workers(utcnow(), VERSION)
    assert [w.name for w in listed] == ["fleet@a"], "a second heartbeat updates, never adds a row"
    again = listed[0]
    assert (again.concurrency, again.queues, again.host, again.pid) == (4, ("fleet",), "box", 100)
    assert again.heartbeat_at >= first.heartbeat_at
    assert again.started_at == first.started_at, "the same process keeps its start time"


def test_a_new_process_under_the_same_name_starts_anew(store):
    beat("fleet@a", pid=100)
    started = workers.list_workers(utcnow(), VERSION)[0].started_at
    beat("fleet@a", pid=200)
    view = workers.list_workers(utcnow(), VERSION)[0]
    assert view.pid == 200 and view.started_at > started


def test_a_clean_stop_is_stopped_and_a_later_heartbeat_brings_it_back(store):
    beat("fleet@a", running=3)
    workers.record_stopped("fleet@a")
    row = db.session.scalar(select(Worker).where(Worker.name == "fleet@a"))
    assert row.running == 0 and row.stopped_at is not None
    assert workers.list_workers(utcnow(), VERSION)[0].state == "stopped"
    beat("fleet@a")
    assert workers.list_workers(utcnow(), VERSION)[0].state == "online", "a heartbeat clears stopped_at"


def test_stopping_an_unknown_worker_changes_nothing(store):
    workers.record_stopped("fleet@nobody")
    assert workers.list_workers(utcnow(), VERSION) == []


# --- states, versions, running shards -------------------------------------------------------------------

@pytest.mark.parametrize("age, stopped, state", [
    pytest.param(0, False, "online", id="fresh heartbeat"),
    pytest.param(workers.WORKER_STALE_SECONDS, False, "online", id="exactly at the limit"),
    pytest.param(workers.WORKER_STALE_SECONDS + 1, False, "lost", id="silent past the limit"),
    pytest.param(None, False, "lost", id="never a heartbeat"),
    pytest.param(5, True, "stopped", id="said goodbye"),
    pytest.param(3600, True, "stopped", id="said goodbye long ago"),
])
def test_the_state_comes_from_the_clock(age, stopped, state):
    now = utcnow()
    heartbeat = None if age is None else now - timedelta(seconds=age)
    assert workers.worker_state(heartbeat, now if stopped else None, now) == state


def test_a_killed_worker_turns_lost_by_itself_and_lists_after_the_online_ones(store):
    beat("fleet@z-alive")
    beat("fleet@a-killed")
    beat("fleet@b-stopped")
    workers.record_stopped("fleet@b-stopped")
    age_heartbeat("fleet@a-killed", workers.WORKER_STALE_SECONDS + 5)
    listed = workers.list_workers(utcnow(), VERSION)
    assert [(w.name, w.state) for w in listed] == [
        ("fleet@z-alive", "online"), ("fleet@a-killed", "lost"), ("fleet@b-stopped", "stopped")]
    assert listed[1].heartbeat_age(utcnow()) > workers.WORKER_STALE_SECONDS


def test_a_worker_of_another_fleet_version_is_marked(store):
    beat("fleet@old", version="1.0.0")
    beat("fleet@new")
    views = by_name(workers.list_workers(utcnow(), VERSION))
    assert not views["fleet@old"].version_ok and views["fleet@new"].version_ok


def test_running_shards_are_counted_from_the_shards_table_in_one_query(store):
    beat("fleet@a", running=0)  # what the worker said is not what is counted: the shards table is
    beat("fleet@b", running=7)
    add_run_with_shards({"status": "running", "worker": "fleet@a"}, {"status": "running", "worker": "fleet@a"},
                        {"status": "done", "worker": "fleet@b"}, {"status": "running", "worker": "fleet@gone"})
    statements = []
    engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        views = by_name(workers.list_workers(utcnow(), VERSION))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert (views["fleet@a"].running, views["fleet@b"].running) == (2, 0)
    assert len(statements) == 1, statements


# --- capacity ---------------------------------------------------------------------------------------

def test_capacity_counts_online_workers_of_this_version_that_refuse_nothing(store):
    assert workers.online_capacity(utcnow(), VERSION) == 0, "no worker: no capacity"
    beat("fleet@a", concurrency=4)
    beat("fleet@b", concurrency=2)
    beat("fleet@old", concurrency=8, version="0.9")
    beat("fleet@refusing", concurrency=16, refusing="no SSH key in /var/lib/fleet/ssh")
    beat("fleet@lost", concurrency=32)
    age_heartbeat("fleet@lost", workers.WORKER_STALE_SECONDS + 1)
    beat("fleet@stopped", concurrency=64)
    workers.record_stopped("fleet@stopped")
    assert workers.online_capacity(utcnow(), VERSION) == 6
    assert workers.capacity_of(workers.list_workers(utcnow(), VERSION)) == 6, "the same rule, from listed workers"
    assert workers.online_capacity(utcnow(), "0.9") == 8
    assert workers.online_capacity(utcnow() + timedelta(minutes=5), VERSION) == 0, "every heartbeat went stale"


# --- shards of a run ---------------------------------------------------------------------------------

def test_the_shards_of_a_run_come_back_in_order_with_their_attempts(store):
    now = utcnow()
    run_id = add_run_with_shards(
        {"hosts": ["web1", "web2"], "status": "done", "worker": "fleet@a", "outcome": "successful",
         "started_at": now, "finished_at": now + timedelta(seconds=9)},
        {"hosts": ["db1"], "status": "running", "attempt": 2, "worker": "fleet@b",
         "history": "attempt 1 on fleet@a: lost (no heartbeat for 30 s)\n"},
        {"hosts": ["db2"], "status": "interrupted", "worker": "fleet@a", "reason": "the worker was lost mid-converge"},
    )
    shards = workers.shards_of_run(run_id)
    assert [s.index for s in shards] == [0, 1, 2]
    assert shards[0].hosts == ("web1", "web2") and shards[0].finished_at - shards[0].started_at == timedelta(seconds=9)
    assert (shards[1].attempt, shards[1].worker) == (2, "fleet@b")
    assert shards[1].history == ("attempt 1 on fleet@a: lost (no heartbeat for 30 s)",)
    assert shards[2].reason == "the worker was lost mid-converge"


def test_a_local_run_has_no_shards_and_a_queued_one_says_why_it_waits(store):
    local = records.create_run("check", "manual", "a" * 40, "", "test", None)
    assert workers.run_placement(local.id) == workers.RunPlacement("", ())
    queued = add_run_with_shards(status="queued", waiting_reason="the broker redis://127.0.0.1:6379/0 is down")
    assert workers.run_placement(queued).waiting_reason == "the broker redis://127.0.0.1:6379/0 is down"
    assert workers.run_placement(10**6) == workers.RunPlacement("", ()), "no such run: nothing to place"


def test_an_unreadable_host_list_shows_no_hosts_rather_than_failing(store):
    run_id = add_run_with_shards({"status": "failed"})
    db.session.execute(Shard.__table__.update().values(hosts="not json"))
    db.session.commit()
    assert workers.shards_of_run(run_id)[0].hosts == ()
