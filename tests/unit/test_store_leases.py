"""Leases against a real SQLite file: a run's lease renewed, lost, lapsed; the leader lock taken, refused,
handed over."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from fleet.store import leases, queries, records
from fleet.store.models import ControllerState, HostLock, Run
from fleet.vocabulary import utcnow
from tests.unit.store_fixtures import temporary_store

ME = leases.Holder("box", 100, "aaaa")
OTHER = leases.Holder("box", 200, "bbbb")
FAR_AHEAD = timedelta(minutes=5)


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def running_run(holder: leases.Holder = ME, seconds: int = 30) -> int:
    run = records.create_run("check", "manual", "a" * 40, "", "test", None, lease_seconds=seconds)
    assert leases.claim_run(run.id, holder, seconds)
    return run.id


def never_gone(holder):
    return False


@pytest.mark.parametrize("text,holder", [
    pytest.param("box:100:aaaa", ME, id="a process"),
    pytest.param("fe80::1:100:aaaa", leases.Holder("fe80::1", 100, "aaaa"), id="a host name with colons"),
    pytest.param("box:100:", leases.Holder("box", 100, ""), id="a process whose token is unknown"),
    pytest.param("", None, id="no holder"),
    pytest.param("garbage", None, id="unreadable"),
])
def test_a_holder_reads_back_from_its_id(text, holder):
    assert leases.Holder.parse(text) == holder
    if holder is not None:
        assert leases.Holder.parse(holder.id) == holder


def test_only_the_holder_renews_a_run_and_only_while_it_runs(store):
    run_id = running_run(ME)
    before = queries.get_run(run_id).lease_expires_at
    assert leases.renew_run(run_id, ME, 60)
    assert queries.get_run(run_id).lease_expires_at > before
    assert not leases.renew_run(run_id, OTHER, 60), "another process cannot renew a lease it does not hold"
    records.finish_run(run_id, "successful", [])
    assert not leases.renew_run(run_id, ME, 60), "a closed run has no lease left to renew"


def test_a_lapsed_lease_interrupts_the_run_and_frees_its_hosts(store):
    lapsed, fresh = running_run(ME), running_run(OTHER)
    records.acquire_host_locks(lapsed, ["web1"])
    records.acquire_host_locks(fresh, ["web2"])
    store.execute(update(Run).where(Run.id == fresh).values(lease_expires_at=utcnow() + FAR_AHEAD * 2))
    store.commit()
    closed = leases.close_lapsed_runs(never_gone, now=utcnow() + FAR_AHEAD)
    assert [(c.run.id, c.holder) for c in closed] == [(lapsed, ME)]
    run = queries.get_run(lapsed)
    assert run.status == "interrupted" and run.finished_at is not None
    assert "(pid 100 on box) stopped while this run was running (its lease ran out at" in run.error
    assert "results recorded so far are kept" in run.error
    assert queries.get_run(fresh).status == "running"
    assert store.scalars(select(HostLock.host)).all() == ["web2"]


def test_a_holder_known_to_be_gone_need_not_wait_for_the_lease(store):
    dead, alive = running_run(ME), running_run(OTHER)
    closed = leases.close_lapsed_runs(lambda holder: holder == ME)
    assert [c.run.id for c in closed] == [dead]
    assert queries.get_run(alive).status == "running"


def test_a_run_without_a_lease_lapses_a_lease_period_after_it_started(store):
    old = running_run(ME)
    store.execute(update(Run).where(Run.id == old).values(lease_holder="", lease_expires_at=None))
    store.commit()
    assert leases.close_lapsed_runs(never_gone, grace_seconds=30) == []
    assert [c.run.id for c in leases.close_lapsed_runs(never_gone, grace_seconds=30, now=utcnow() + FAR_AHEAD)] == [old]


def test_locks_left_by_a_closed_run_are_freed_by_the_next_look(store):
    run_id = running_run(ME)
    records.acquire_host_locks(run_id, ["web1"])
    records.finish_run(run_id, "failed", [], "the lock release was refused")
    assert leases.close_lapsed_runs(never_gone) == []
    assert store.scalar(select(HostLock)) is None


def test_one_leader_the_other_waits_and_takes_over_when_the_lock_lapses(store):
    first = leases.hold_leadership(ME, 30)
    assert first.held and (first.leader.pid, first.leader.host) == (100, "box")
    second = leases.hold_leadership(OTHER, 30)
    assert not second.held and second.leader.id == ME.id, "the other is told who leads"
    assert leases.hold_leadership(ME, 30).held, "the leader renews"
    store.execute(update(ControllerState).values(leader_expires_at=utcnow() - timedelta(seconds=1)))
    store.commit()
    assert leases.current_leader() is None
    taken = leases.hold_leadership(OTHER, 30)
    assert taken.held and taken.leader.pid == 200
    assert not leases.hold_leadership(ME, 30).held, "the old leader, back, now waits"


def test_leading_writes_the_heartbeat_and_a_clean_stop_hands_over_at_once(store):
    before = utcnow()
    leases.hold_leadership(ME, 30)
    state = queries.controller_state()
    assert state.heartbeat_at >= before and state.pid == 100
    leases.release_leadership(OTHER)
    assert leases.current_leader().id == ME.id, "only the holder can release the lock"
    leases.release_leadership(ME)
    assert leases.current_leader() is None
    assert leases.hold_leadership(OTHER, 30).held


def test_only_the_leader_renews_the_lock_and_renewing_is_no_heartbeat(store):
    leases.hold_leadership(ME, 1)
    beat = queries.controller_state().heartbeat_at
    assert not leases.renew_leadership(OTHER, 60)
    assert leases.renew_leadership(ME, 60)
    state = queries.controller_state()
    assert state.leader_expires_at > utcnow() + timedelta(seconds=50)
    assert state.heartbeat_at == beat, "the heartbeat is the loop's own"


# The other process is sqlite3 on the database file.
@pytest.mark.sqlite_only
def test_a_run_renewed_between_the_look_and_the_close_is_left_running(store, tmp_path, monkeypatch):
    run_id = running_run(ME)
    other_process = sqlite3.connect(tmp_path / "fleet.db")
    looked = leases._lapsed

    def renewed_right_after_the_look(run, is_gone, grace_seconds, now):
        lapsed = looked(run, is_gone, grace_seconds, now)
        other_process.execute("UPDATE runs SET lease_expires_at = '2999-01-01 00:00:00.000000' WHERE id = ?",
                              (run_id,))
        other_process.commit()  # the holder was slow, not dead, and renewed just now
        return lapsed

    monkeypatch.setattr(leases, "_lapsed", renewed_right_after_the_look)
    try:
        assert leases.close_lapsed_runs(never_gone, now=utcnow() + FAR_AHEAD) == []
    finally:
        other_process.close()
    assert queries.get_run(run_id).status == "running"


def test_a_lock_kept_because_a_stop_was_not_confirmed_outlives_the_run_and_every_look_until_released(store):
    from fleet.drift import HostVerdict

    run_id = running_run(ME)
    records.acquire_host_locks(run_id, ["web1", "web2"])
    reason = "remote work may still run: the run's SSH connection to it is gone"
    records.finish_run(run_id, "canceled", [HostVerdict("web1", "incomplete", "stopped"),
                                            HostVerdict("web2", "incomplete", reason)])
    records.release_host_locks(run_id, {"web2": reason})
    assert leases.close_lapsed_runs(never_gone, now=utcnow() + FAR_AHEAD) == []
    assert [(lock.host, lock.run_id, lock.reason) for lock in records.kept_locks()] == [("web2", run_id, reason)]
    assert queries.get_host("web2").status == "incomplete" and queries.get_host("web2").message == reason
    other = running_run(OTHER)
    assert records.acquire_host_locks(other, ["web1", "web2"]) == [("web2", run_id)]
    assert records.acquire_host_locks(other, ["web1"]) == []

    assert records.release_kept_lock("web1", "released") is None, "web1's lock is a running run's, not kept"
    released = records.release_kept_lock("web2", "lock released by ada")
    assert (released.host, released.run_id) == ("web2", run_id)
    assert records.kept_locks() == [] and records.release_kept_lock("web2", "again") is None
    assert queries.get_host("web2").message == "lock released by ada"
    assert records.acquire_host_locks(other, ["web2"]) == []
