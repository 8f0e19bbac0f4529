"""`fleet worker` (fleet.executor.worker) without a broker: its refusals at start, its heartbeat row, the shard
task it registers (version refusal, running count) and the kept Ansible processes it stops, against a real
SQLite store and real processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select, update

import fleet
from fleet import warm
from fleet.errors import ConfigError
from fleet.executor import worker
from fleet.executor.celery_app import SHARD_TASK
from fleet.settings import replace
from fleet.store import db, records, shards, workers
from fleet.store.db import open_store
from fleet.store.models import Shard, Worker
from fleet.vocabulary import utcnow
from tests.conftest import settings_for_source, wait_for

HERE = socket.gethostname()


@pytest.fixture
def settings(tmp_path):
    return replace(settings_for_source(tmp_path, "schedule: '0 0 1 1 *'\n"), broker_url="memory://")


@pytest.fixture
def store(settings):
    with open_store(settings) as store:
        yield store


@pytest.fixture
def app(monkeypatch):
    """A Celery app of this test alone: the task it registers (Celery shares tasks with every app made later)
    is forgotten after it, as a worker process registers its task once."""
    import celery._state

    monkeypatch.setattr(celery._state, "_on_app_finalizers", set(celery._state._on_app_finalizers))
    return Celery("test", broker="memory://", set_as_current=False)


def beat(name: str, host: str, pid: int, age: float = 0) -> None:
    workers.record_heartbeat(name, host, pid, fleet.__version__, 2, ["fleet"], 0)
    if age:
        db.session.execute(update(Worker).where(Worker.name == name)
                           .values(heartbeat_at=utcnow() - timedelta(seconds=age)))
        db.session.commit()


def test_a_worker_without_a_broker_is_refused_before_it_touches_anything(settings):
    with pytest.raises(ConfigError, match="FLEET_BROKER_URL"):
        worker.start_worker(replace(settings, broker_url=""))
    assert not settings.data_dir.exists()  # no store opened, no data directory made


def test_the_running_count_is_exact_under_threads():
    state = worker.WorkerState("fleet@x", 4, ["fleet"])

    def work():
        for _ in range(200):
            state.started()
            state.ended()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    state.started()
    for thread in threads:
        thread.join()
    assert state.running == 1 and state.refusing == ""
    assert worker.default_name() == f"fleet@{HERE}"


def test_a_second_live_worker_of_the_same_name_is_refused(store):
    beat("fleet@busy", "elsewhere.example", 4321)
    with pytest.raises(ConfigError, match="a worker named fleet@busy is running already .* another --name"):
        worker._refuse_duplicate_name("fleet@busy")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        beat("fleet@here", HERE, sleeper.pid)  # alive on this machine: a real second one
        with pytest.raises(ConfigError, match="fleet@here"):
            worker._refuse_duplicate_name("fleet@here")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_name_left_by_a_dead_lost_or_this_very_worker_is_taken_over(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    beat("fleet@killed", HERE, dead.pid)  # a killed worker of this machine: its pid is gone
    worker._refuse_duplicate_name("fleet@killed")
    beat("fleet@lost", "elsewhere.example", 1, age=workers.WORKER_STALE_SECONDS + 30)
    worker._refuse_duplicate_name("fleet@lost")
    beat("fleet@me", HERE, os.getpid())
    worker._refuse_duplicate_name("fleet@me")
    worker._refuse_duplicate_name("fleet@never-seen")


def test_the_heartbeat_writes_the_worker_s_row_at_once_and_on_every_beat(store):
    state = worker.WorkerState("fleet@beats", 3, ["fleet", "checks"])
    heart = worker._Heartbeat(store, state)
    heart.start()
    try:
        row = db.session.scalar(select(Worker).where(Worker.name == "fleet@beats"))
        assert (row.host, row.pid, row.version, row.concurrency, row.queues, row.running) == (
            HERE, os.getpid(), fleet.__version__, 3, "fleet,checks", 0)
        state.started()
        state.refusing = "fleet 0.0.1 here"
        heart._beat()
        db.session.expire_all()
        row = db.session.scalar(select(Worker).where(Worker.name == "fleet@beats"))
        assert (row.running, row.refusing) == (1, "fleet 0.0.1 here")
    finally:
        heart.stop()
    assert not heart.thread.is_alive()  # stop() ends the loop without waiting for the next beat


def test_the_shard_task_refuses_a_controller_of_another_version(store, settings, app):
    state = worker.WorkerState("fleet@old", 1, ["fleet"])
    worker._register_task(app, store, settings, state)
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    [shard] = shards.create_shards(run.id, [["web1", "web2"]])
    shards.mark_sent(shard)
    assert app.tasks[SHARD_TASK](shard.id, shard.attempt, "9.9.9") == "refused"
    assert "9.9.9" in state.refusing and fleet.__version__ in state.refusing
    db.session.expire_all()
    stored = db.session.get(Shard, shard.id)
    assert stored.status == "refused" and stored.reason == state.refusing
    assert state.running == 0


def test_the_shard_task_of_a_shard_nobody_sent_runs_nothing_and_counts_back_down(store, settings, app):
    state = worker.WorkerState("fleet@now", 1, ["fleet"])
    worker._register_task(app, store, settings, state)
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    [shard] = shards.create_shards(run.id, [["web1"]])  # pending: its message was never sent
    assert app.tasks[SHARD_TASK](shard.id, shard.attempt, fleet.__version__) == ""
    assert state.running == 0 and state.refusing == ""
    assert db.session.get(Shard, shard.id).status == "pending"


def test_a_stopping_worker_stops_the_kept_ansible_processes_of_its_data_directory(settings, monkeypatch):
    runtime = Path(tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "fleet.warm.server"])
    try:
        wait_for(lambda: b"fleet.warm.server" in Path(f"/proc/{kept.pid}/cmdline").read_bytes(), 10,
                 "the pretend kept process to start", interval=0.01)
        anchor = str(settings.data_dir.resolve())
        (warm.runtime_dir() / f"{warm.anchor_prefix(anchor)}-aaaa.lock").write_text(f"{kept.pid}\n")
        assert worker.stop_kept_processes(settings) == 1
        assert kept.wait(timeout=10) == -signal.SIGTERM
    finally:
        kept.kill()
        kept.wait()
        shutil.rmtree(runtime, ignore_errors=True)
    assert worker.stop_kept_processes(settings) == 0
