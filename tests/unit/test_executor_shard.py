"""The worker's side of a shard, in process: a real store and git source, the recorded truth-suite events
replayed by the fake runner (tests/scaleout runs real workers, a broker and lab hosts)."""

from __future__ import annotations

import fleet
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from fleet.executor.dispatch import verdicts_from_json
from fleet.executor.shard import execute_shard, version_refusal
from fleet.fake_runner import FakeRunner, hosts_of, load_events
from fleet.revisions import sync_source
from fleet.settings import replace
from fleet.store import records, shards
from fleet.store.db import db, open_store
from fleet.store.models import Revision, Shard, TaskResultRow
from fleet.vocabulary import ShardStatus
from fleet.vocabulary import utcnow
from tests.conftest import settings_for_source, wait_for
from tests.truth_cases import CASES

RECORDED = load_events(Path(__file__).parent / "fixtures" / "truth_check.json")
CASE_HOSTS = hosts_of(RECORDED, groups=("cases",))
FLEET_YML = "accept_unverified:\n  - Flush the app cache\n"


@pytest.fixture
def settings(tmp_path):
    return replace(settings_for_source(tmp_path, FLEET_YML), lease_seconds=3)


@pytest.fixture
def store(settings):
    with open_store(settings) as store:
        yield store


def sent_shard(settings, fake, names=None):
    """A run at the desired revision with one shard of `names` (every case host), sent to the broker."""
    desired = sync_source(settings, runner=fake)
    run = records.create_run("check", "manual", desired.revision.sha, "", "test", None)
    [shard] = shards.create_shards(run.id, [names or [h.name for h in CASE_HOSTS]])
    assert shards.mark_sent(shard)
    return shard


def task_rows(run_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(TaskResultRow).where(TaskResultRow.run_id == run_id))


def test_a_shard_gives_the_verdicts_a_local_run_gives_and_numbers_its_events_from_its_offset(settings, store):
    shard = sent_shard(settings, FakeRunner(events=RECORDED, hosts=CASE_HOSTS))
    status = execute_shard(settings, shard.id, 1, "w1", runner=FakeRunner(events=RECORDED, hosts=CASE_HOSTS))
    done = shards.get_shard(shard.id)
    assert (status, done.status, done.outcome, done.worker) == (ShardStatus.DONE, "done", "successful", "w1")
    assert {v.name: v.status for v in verdicts_from_json(done.verdicts)} == {c.host: c.status for c in CASES}
    seqs = db.session.scalars(select(TaskResultRow.seq).where(TaskResultRow.run_id == shard.run_id)).all()
    assert seqs and min(seqs) >= shards.seq_offset(0, 1)
    assert not shards.renew(shard.id, done.token, 3)  # done: nothing more passes its fence


def test_a_second_delivery_of_the_same_shard_runs_nothing(settings, store):
    fake = FakeRunner(events=RECORDED, hosts=CASE_HOSTS)
    shard = sent_shard(settings, fake)
    execute_shard(settings, shard.id, 1, "w1", runner=fake)
    again = FakeRunner(events=RECORDED, hosts=CASE_HOSTS)
    assert execute_shard(settings, shard.id, 1, "w2", runner=again) == ""
    assert again.jobs == [] and shards.get_shard(shard.id).worker == "w1"


def test_a_sha_the_store_does_not_hold_as_valid_fails_the_shard_before_ansible(settings, store):
    fake = FakeRunner(events=RECORDED, hosts=CASE_HOSTS)
    shard = sent_shard(settings, fake)
    db.session.execute(update(Revision).values(status="rejected"))
    db.session.commit()
    assert execute_shard(settings, shard.id, 1, "w1", runner=fake) == ShardStatus.FAILED
    failed = shards.get_shard(shard.id)
    assert "no validated revision" in failed.reason and fake.jobs == []


def test_a_shard_given_away_while_it_runs_stops_and_writes_nothing_more(settings, store):
    """The controller found its lease lapsed (a stalled worker) and ran it again elsewhere: this worker
    stops Ansible and records nothing, whatever it still had to say."""
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=40)
    shard = sent_shard(settings, hanging)
    worker = start_worker_thread(store, settings, shard, hanging)
    with store.bound():
        db.session.execute(update(Shard).where(Shard.id == shard.id)
                           .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        assert shards.rearm_lost(shards.get_shard(shard.id), "given away by the test")
    worker.join(timeout=30)
    assert not worker.is_alive()
    again = shards.get_shard(shard.id)
    assert (again.status, again.attempt, again.verdicts) == (ShardStatus.PENDING, 2, "")
    time.sleep(1)
    assert task_rows(shard.run_id) == 0  # the first attempt's rows were dropped, and none came after


def test_a_canceled_run_stops_its_shard_which_keeps_its_settled_verdicts(settings, store):
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=40)
    shard = sent_shard(settings, hanging)
    worker = start_worker_thread(store, settings, shard, hanging)
    with store.bound():
        records.note_cancel(shard.run_id, "canceled by the test")
    worker.join(timeout=30)
    ended = shards.get_shard(shard.id)
    assert (ended.status, ended.outcome) == (ShardStatus.CANCELED, "canceled")
    found = verdicts_from_json(ended.verdicts)
    assert len(found) == len(CASE_HOSTS) and "in_sync" not in {v.status for v in found}
    assert task_rows(shard.run_id) > 0  # what was found before the stop is kept


def start_worker_thread(store, settings, shard, runner) -> threading.Thread:
    """execute_shard on a thread of its own (as Celery's pool runs it), once its Ansible is running."""
    def work():
        with store.bound():
            execute_shard(settings, shard.id, 1, "w1", runner=runner)

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(lambda: runner.jobs, 20, "the shard's Ansible to start")
    return worker


def test_a_canceled_shard_says_which_hosts_may_still_run_its_work_and_the_controller_keeps_their_locks(settings,
                                                                                                    store):
    from fleet.executor.dispatch import shard_verdicts
    from fleet.executor.base import RunLease
    from fleet.jobs import Execution
    from fleet.store import leases, queries

    touched = {e["event_data"]["host"] for e in RECORDED[:40] if e.get("event") in ("runner_on_ok", "runner_on_failed")}
    assert touched, "the replayed events started tasks on some hosts before the hang"
    unsure = set(sorted(touched)[:2])
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=40,
                         unconfirmed={name: "the run's SSH connection to it is gone (fake)" for name in unsure})
    shard = sent_shard(settings, hanging)
    worker = start_worker_thread(store, settings, shard, hanging)
    with store.bound():
        records.note_cancel(shard.run_id, "canceled by the test")
    worker.join(timeout=60)
    ended = shards.get_shard(shard.id)
    # The worker stopped its hosts' remote work before its shard ended: on every host the shard ran a task on.
    assert [touched_then for _, touched_then in hanging.remote_stops] == [frozenset(touched)]
    found = {v.name: v for v in verdicts_from_json(ended.verdicts)}
    said = {name for name, v in found.items() if v.message.startswith("remote work may still run")}
    assert said == unsure and all(found[name].status == "incomplete" for name in unsure)

    lease = RunLease(shard.run_id, leases.this_process(), settings)
    controller = Execution(settings, queries.get_run(shard.run_id), None, None, hanging, lease)
    controller.gathered = shard_verdicts(ended)
    assert set(controller.unconfirmed()) == unsure
    records.acquire_host_locks(shard.run_id, sorted(found))
    controller.release_locks()
    assert {lock.host for lock in records.kept_locks()} == unsure


def test_a_worker_refuses_a_controller_of_another_version_and_names_both():
    assert version_refusal("w1", fleet.__version__) == ""
    refusal = version_refusal("w1", "9.9.9")
    assert "w1" in refusal and fleet.__version__ in refusal and "9.9.9" in refusal
