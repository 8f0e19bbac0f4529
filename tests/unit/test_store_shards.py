"""Shards against a real store: claims fenced by their token, lost attempts re-armed or interrupted, a stopped
run's shards canceled. Every move is conditional, so a late or duplicate message changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from fleet.drift import TaskResult
from fleet.store import queries, records, shards
from fleet.store.models import RunOutput, Shard, TaskResultRow
from fleet.vocabulary import ShardStatus
from fleet.vocabulary import RunStatus, utcnow
from tests.unit.store_fixtures import temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def sharded_run(store, groups=(["a", "b"], ["c"])) -> tuple[int, list]:
    run = records.create_run("check", "manual", "f" * 40, "", "test", None)
    return run.id, shards.create_shards(run.id, [list(g) for g in groups])


def sent(shard):
    assert shards.mark_sent(shard)
    return shards.get_shard(shard.id)


def lapse(store, shard_id: int) -> None:
    store.execute(update(Shard).where(Shard.id == shard_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    store.commit()


def record_task(shard, host: str, seq: int) -> None:
    recorder = records.RunRecorder(shard.run_id)
    recorder.add_task(TaskResult(seq=shards.seq_offset(shard.index, shard.attempt) + seq, host=host, task="t",
                                 action="file", status="ok"))
    recorder.flush()


def test_shards_are_created_pending_in_index_order_with_their_hosts(store):
    run_id, created = sharded_run(store)
    assert [(s.index, s.names, s.status, s.attempt) for s in shards.shards_of(run_id)] == [
        (0, ["a", "b"], ShardStatus.PENDING, 1), (1, ["c"], ShardStatus.PENDING, 1)]


def test_a_sent_shard_is_claimed_once_and_a_duplicate_message_finds_nothing(store):
    _, (first, _) = sharded_run(store)
    sent(first)
    claimed = shards.claim(first.id, 1, "w1", 30)
    assert claimed.status == ShardStatus.RUNNING and claimed.worker == "w1" and len(claimed.token) == 32
    assert shards.claim(first.id, 1, "w2", 30) is None  # the same message delivered twice
    assert shards.get_shard(first.id).worker == "w1"


def test_a_pending_shard_cannot_be_claimed_before_it_is_sent(store):
    _, (first, _) = sharded_run(store)
    assert shards.claim(first.id, 1, "w1", 30) is None


def test_only_the_claiming_attempt_passes_the_fence(store):
    _, (first, _) = sharded_run(store)
    sent(first)
    claimed = shards.claim(first.id, 1, "w1", 30)
    assert shards.renew(claimed.id, claimed.token, 30)
    assert not shards.renew(claimed.id, "0" * 32, 30)


def test_a_lost_check_shard_is_rearmed_its_task_rows_dropped_and_its_output_kept_with_a_note(store):
    run_id, (first, second) = sharded_run(store)
    claimed = shards.claim(sent(first).id, 1, "w1", 30)
    other = shards.claim(sent(second).id, 1, "w2", 30)
    record_task(claimed, "a", 1)
    record_task(other, "c", 1)
    lapse(store, claimed.id)
    assert shards.lease_lapsed(shards.get_shard(claimed.id), utcnow())
    assert shards.rearm_lost(shards.get_shard(claimed.id), "worker w1 lost")
    again = shards.get_shard(claimed.id)
    assert (again.status, again.attempt, again.worker, again.token) == (ShardStatus.PENDING, 2, "", "")
    assert "attempt 1 on w1: worker w1 lost" in again.history
    hosts = store.scalars(select(TaskResultRow.host).where(TaskResultRow.run_id == run_id)).all()
    assert hosts == ["c"]  # the other shard's results stay
    notes = store.scalars(select(RunOutput.text).where(RunOutput.run_id == run_id)).all()
    assert any("worker w1 lost" in text for text in notes)
    assert not shards.renew(claimed.id, claimed.token, 30)  # the lost worker can write nothing more


def test_a_shard_renewed_meanwhile_is_not_taken_from_its_worker(store):
    _, (first, _) = sharded_run(store)
    claimed = shards.claim(sent(first).id, 1, "w1", 30)
    seen_lapsed = claimed  # the controller read it while its lease looked lapsed; the worker renewed since
    assert not shards.rearm_lost(seen_lapsed, "lost?")
    assert shards.get_shard(first.id).status == ShardStatus.RUNNING


def test_a_lost_converge_shard_is_interrupted_and_never_claimable_again(store):
    _, (first, _) = sharded_run(store)
    claimed = shards.claim(sent(first).id, 1, "w1", 30)
    lapse(store, claimed.id)
    assert shards.interrupt_lost(shards.get_shard(claimed.id), "worker w1 lost mid-converge")
    shard = shards.get_shard(claimed.id)
    assert (shard.status, shard.attempt, shard.final) == (ShardStatus.INTERRUPTED, 1, True)
    assert shards.claim(claimed.id, 1, "w2", 30) is None
    assert not shards.renew(claimed.id, claimed.token, 30)


def test_stopping_a_run_cancels_its_unstarted_shards_and_tells_running_ones(store):
    run_id, (first, second) = sharded_run(store)
    claimed = shards.claim(sent(first).id, 1, "w1", 30)
    sent(second)
    assert not shards.run_stopped(run_id)
    records.note_cancel(run_id, "canceled by test")
    assert shards.run_stopped(run_id)
    assert shards.cancel_unstarted(run_id, "stopped") == 1
    assert shards.get_shard(second.id).status == ShardStatus.CANCELED
    assert shards.claim(second.id, 1, "w2", 30) is None  # its message, delivered late
    assert shards.get_shard(claimed.id).status == ShardStatus.RUNNING  # its worker stops it and reports


def test_a_run_closed_under_its_shards_stops_them(store):
    run_id, _ = sharded_run(store)
    records.fail_run(run_id, "closed")
    assert shards.run_stopped(run_id)


def test_a_refused_shard_goes_back_to_pending_to_be_sent_again(store):
    _, (first, _) = sharded_run(store)
    sent(first)
    assert shards.refuse(first.id, 1, "worker odd runs fleet 0.0.0")
    refused = shards.get_shard(first.id)
    assert (refused.status, refused.reason) == (ShardStatus.REFUSED, "worker odd runs fleet 0.0.0")
    assert shards.back_to_pending(refused, refused.reason)
    again = shards.get_shard(first.id)
    assert again.status == ShardStatus.PENDING and "refused: worker odd runs fleet 0.0.0" in again.history


def test_task_results_of_a_run_come_back_per_host_in_order(store):
    run_id, (first, second) = sharded_run(store)
    claimed = shards.claim(sent(first).id, 1, "w1", 30)
    record_task(claimed, "b", 2)
    record_task(claimed, "a", 1)
    found = shards.task_results_of(run_id)
    assert sorted(found) == ["a", "b"] and found["a"][0].task == "t" and found["a"][0].status == "ok"


def test_event_numbers_of_shards_and_attempts_never_meet():
    offsets = [shards.seq_offset(index, attempt) for index in range(3) for attempt in range(1, 4)]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert shards.seq_offset(0, 2) - shards.seq_offset(0, 1) == shards.ATTEMPT_SEQ_SPAN


def test_a_waiting_reason_is_written_and_cleared(store):
    run_id, _ = sharded_run(store)
    records.note_run_waiting(run_id, "the broker does not answer")
    assert queries.get_run(run_id).waiting_reason == "the broker does not answer"
    records.note_run_waiting(run_id, "")
    assert queries.get_run(run_id).waiting_reason == ""
    assert queries.get_run(run_id).status == RunStatus.RUNNING
