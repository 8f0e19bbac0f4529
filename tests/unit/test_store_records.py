"""Writes of the store against a real SQLite file: runs, locks, approvals, cancel, recovery, bookkeeping."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from fleet.drift import HostVerdict, TaskResult
from fleet.errors import FleetError, NotFound
from fleet.store import queries, records
from fleet.source import CommitInfo
from fleet.store.models import Approval, Host, HostLock, Run, RunHost, RunOutput, TaskResultRow
from fleet.store.views import ApprovalView, RevisionView, RunView
from tests.unit.store_fixtures import add_runs, inventory_entry, temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def test_sync_hosts_follows_the_inventory(store):
    records.sync_hosts([inventory_entry("web1", "web"), inventory_entry("db1", "db")])
    records.sync_hosts([inventory_entry("web1", "web", "prod")])
    hosts = {h.name: h for h in store.scalars(select(Host))}
    assert hosts["web1"].groups == "web prod" and hosts["web1"].in_inventory
    assert not hosts["db1"].in_inventory
    assert [h.name for h in queries.inventory_hosts()] == ["web1"]


def test_a_finished_check_writes_verdicts_counts_and_host_state(store):
    records.sync_hosts([inventory_entry("web1"), inventory_entry("web2")])
    run = records.create_run("check", "manual", "a" * 40, "", "test", 123)
    recorder = records.RunRecorder(run.id)
    recorder.add_task(TaskResult(seq=1, host="web1", task="motd", action="copy", status="changed", diff="+x"))
    recorder.flush()
    verdicts = [HostVerdict("web1", "drifted", changed=1, verified=2, unverified=1),
                HostVerdict("web2", "incomplete")]
    records.finish_run(queries.get_run(run.id), "successful", verdicts)  # a view is enough to finish a run
    finished = queries.get_run(run.id)
    assert (finished.status, finished.hosts_total, finished.hosts_drifted, finished.pid) == ("successful", 2, 1, None)
    web1, web2 = queries.get_host("web1"), queries.get_host("web2")
    assert (web1.status, web1.last_check_run_id, str(web1.coverage)) == ("drifted", run.id, "2/3")
    assert web2.status == "unknown"  # an incomplete verdict proves nothing: what we knew stays
    assert [r.status for r in store.scalars(select(RunHost).order_by(RunHost.host))] == ["drifted", "incomplete"]


def test_host_locks_are_all_or_nothing(store):
    first, second = add_runs(store, 2, status="running")
    assert records.acquire_host_locks(first, ["web1", "web2"]) == []
    assert records.acquire_host_locks(second, ["web2", "web3"]) == [("web2", first)]
    assert store.scalar(select(HostLock).where(HostLock.host == "web3")) is None
    assert records.acquire_host_locks(first, ["web1"]) == []  # a holder may ask again
    records.release_host_locks(first)
    assert records.acquire_host_locks(second, ["web2", "web3"]) == []


def test_an_identical_queued_check_is_joined_but_a_converge_never(store):
    run, joined = records.enqueue_run("check", "manual", "web1", "a")
    again, joined_again = records.enqueue_run("check", "manual", "web1", "b")
    assert (joined, joined_again, again.id) == (False, True, run.id)
    converge, joined = records.enqueue_run("converge", "manual", "web1", "a")
    assert not records.enqueue_run("converge", "manual", "web1", "a")[1]
    assert queries.next_queued_run().id == run.id


@pytest.mark.parametrize("status,expected_status", [
    pytest.param("queued", "canceled", id="a queued run stops at once"),
    pytest.param("running", "running", id="a running run stops at its next event"),
])
def test_cancel_requests(store, status, expected_status):
    run_id = add_runs(store, 1, status=status)[0]
    records.request_cancel(run_id, "canceled by otto")
    run = queries.get_run(run_id)
    assert (run.status, run.cancel_requested, run.cancel_reason) == (expected_status, True, "canceled by otto")
    assert records.cancel_requested(run_id)
    records.note_cancel(run_id, "a later reason")
    assert records.cancel_reason(run_id) == "canceled by otto"  # the first reason wins


def test_a_run_closed_by_someone_else_is_not_finished_over(store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    records.sync_hosts([inventory_entry("web1", "web")])
    store.execute(update(Run).where(Run.id == run.id).values(status="interrupted", error="its lease lapsed"))
    store.commit()
    closed = records.finish_run(run.id, "successful", [HostVerdict("web1", "in_sync")])
    assert (closed.status, closed.error) == ("interrupted", "its lease lapsed")
    assert store.scalar(select(RunHost)) is None
    assert queries.get_host("web1").status == "unknown"


# The refusal is an SQLite trigger (RAISE(ABORT)).
@pytest.mark.sqlite_only
def test_a_batch_the_store_refuses_is_kept_whole_or_not_at_all(store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    recorder.add_output(1, "kept")
    recorder.flush()
    store.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON task_results "
                       "BEGIN SELECT RAISE(ABORT, 'injected'); END"))
    store.commit()
    recorder.add_output(2, "written with the refused task, so never")
    recorder.add_task(TaskResult(seq=3, host="web1", task="t", action="file", status="ok"))
    with pytest.raises(IntegrityError, match="injected"):
        recorder.flush()
    assert store.scalars(select(RunOutput.text)).all() == ["kept"]
    recorder.flush()  # the refused batch is gone: nothing is written twice or later
    assert store.scalars(select(RunOutput.text)).all() == ["kept"]


def test_converges_queued_before_a_crash_do_not_start_after_it(store):
    check = add_runs(store, 1, status="queued")[0]
    converge = add_runs(store, 1, kind="converge", status="queued")[0]
    assert [r.id for r in records.interrupt_queued_converges("restarted")] == [converge]
    assert (queries.get_run(converge).status, queries.get_run(check).status) == ("interrupted", "queued")


def test_a_run_that_cannot_go_on_is_failed_once(store):
    run_id = add_runs(store, 1, status="running")[0]
    records.fail_run(run_id, "no desired revision")
    assert (queries.get_run(run_id).status, queries.get_run(run_id).error) == ("failed", "no desired revision")
    records.fail_run(run_id, "again")
    assert queries.get_run(run_id).error == "no desired revision"


def test_an_approval_is_opened_once_per_drift_and_superseded_when_the_drift_changes(store):
    first = records.open_approval("web1", 1, "a" * 40, "sig-1", "1 task")
    assert records.open_approval("web1", 2, "a" * 40, "sig-1", "1 task").id == first.id
    second = records.open_approval("web1", 3, "a" * 40, "sig-2", "2 tasks")
    statuses = {a.id: a.status for a in store.scalars(select(Approval))}
    assert statuses == {first.id: "superseded", second.id: "pending"}
    assert [a.id for a in queries.open_approvals_of("web1")] == [second.id]


def test_an_approval_is_decided_once(store):
    approval = records.open_approval("web1", 1, "a" * 40, "sig", "")
    assert records.decide_approval(approval.id, "otto").status == "approved"
    assert [a.id for a in queries.approved_waiting()] == [approval.id]
    with pytest.raises(FleetError, match="not pending"):
        records.decide_approval(approval.id, "otto")
    with pytest.raises(NotFound):
        records.decide_approval(999, "otto")
    records.close_approval(queries.get_approval(approval.id), "applied", "converged", converge_run_id=7)
    assert (queries.get_approval(approval.id).status, queries.get_approval(approval.id).converge_run_id) == (
        "applied", 7)


def test_a_drift_approval_keeps_its_reason_and_leaves_inventory_approvals_alone(store):
    held = records.open_inventory_approval("b" * 40, ["web1", "web2"], 1, "inventory went from 1 to 2 hosts (+1)")
    drift = records.open_approval("web1", 1, "b" * 40, "sig", "1 task", "history was rewritten or rolled back")
    assert (drift.kind, drift.reason) == ("drift", "history was rewritten or rolled back")
    assert queries.get_approval(held.id).status == "pending", "another host's drift supersedes no inventory hold"
    assert [a.id for a in queries.open_approvals_of("web1")] == [drift.id]


def test_one_inventory_approval_per_revision_superseded_when_the_fleet_moves_on(store):
    first = records.open_inventory_approval("b" * 40, ["web1", "web2"], 1, "jump")
    assert records.open_inventory_approval("b" * 40, ["web1", "web2"], 2, "jump").id == first.id
    second = records.open_inventory_approval("c" * 40, ["web1", "web2", "web3"], 3, "jump")
    assert (first.kind, first.host, first.reason) == ("inventory", "", "jump")
    assert queries.get_approval(first.id).status == "superseded"
    assert [a.id for a in queries.pending_inventory_approvals()] == [second.id]
    assert not queries.revision_inventory("c" * 40).accepted, "noted, not accepted"
    records.accept_inventory("d" * 40, ["web1"])  # a later revision within the limit: nothing left to approve
    assert queries.get_approval(second.id).status == "superseded"
    assert queries.get_approval(second.id).note.startswith(f"the inventory of {'d' * 12} was accepted since")
    assert queries.pending_inventory_approvals() == []


def test_approving_an_inventory_change_makes_it_the_baseline(store):
    records.accept_inventory("a" * 40, ["web1"])
    held = records.open_inventory_approval("b" * 40, ["web1", "web2", "web3"], 1, "jump")
    assert queries.inventory_baseline("b" * 40).sha == "a" * 40
    assert queries.inventory_baseline("a" * 40) is None, "a revision is never its own baseline"
    records.decide_approval(held.id, "otto")
    assert queries.revision_inventory("b" * 40).accepted
    assert queries.inventory_baseline("c" * 40).names == ("web1", "web2", "web3")


def test_approval_writes_hand_back_views_and_close_takes_a_view_or_an_id(store):
    opened = records.open_approval("web1", 1, "a" * 40, "sig", "1 task")
    decided = records.decide_approval(opened.id, "otto")
    assert isinstance(opened, ApprovalView) and isinstance(decided, ApprovalView)
    assert decided.decided_at.tzinfo is not None and decided.created_at.tzinfo is not None
    records.close_approval(decided, "failed", "the re-check found other drift")
    assert queries.get_approval(opened.id).status == "failed"
    records.close_approval(opened.id, "applied", "converged", converge_run_id=3)
    assert (queries.get_approval(opened.id).status, queries.get_approval(opened.id).converge_run_id) == ("applied", 3)


def test_a_revision_is_recorded_once_per_sha_and_read_back_as_a_view(store):
    info = CommitInfo("a" * 40, "ada", datetime(2026, 11, 1, 9, 0), "first", "unsigned", "main")
    rejected = records.record_revision(info, ok=False, error="syntax")
    again = records.record_revision(info, ok=True, rewrites_history=True)
    assert isinstance(rejected, RevisionView) and rejected.status == "rejected" and again.id == rejected.id
    read = queries.get_revision("a" * 40)
    assert (read.status, read.error, read.rewrites_history) == ("valid", "", True)
    assert read.authored_at == datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc) and read.fetched_at.tzinfo
    assert queries.last_valid_revision() == read and list(queries.revisions_page()) == [read]
    assert queries.get_revision("b" * 40) is None


def test_run_writes_hand_back_views(store):
    run, joined = records.enqueue_run("check", "manual", "", "otto")
    assert isinstance(run, RunView) and not joined
    assert isinstance(records.start_queued_run(run, "a" * 40, 1), RunView)
    assert records.fail_run(run.id, "gone").status == "failed" and records.fail_run(404, "none") is None


def test_controller_bookkeeping_is_written_through_the_store(store):
    records.write_heartbeat(NOW)
    records.request_fetch()
    records.schedule_fetch(NOW, 2)
    records.note_check_queued("commit", "b" * 40, NOW)
    state = queries.controller_state()
    assert (state.heartbeat_at, state.fetch_requested, state.fetch_failures) == (NOW, True, 2)
    assert (state.commit_checked_sha, state.last_scheduled_check_at) == ("b" * 40, NOW)
    records.clear_fetch_request()
    records.note_check_queued("schedule", None, NOW)
    assert not queries.controller_state().fetch_requested
    assert queries.controller_state().commit_checked_sha == "b" * 40  # a scheduled check leaves it


def test_a_fetch_is_recorded_and_an_error_keeps_the_desired_revision(store):
    records.record_fetch("repo", "a" * 40, "a" * 40)
    records.record_fetch("repo", None, None, error="unreachable remote")
    state = queries.source_state()
    assert (state.desired_sha, state.stale, state.last_error) == ("a" * 40, True, "unreachable remote")
    assert queries.desired_sha() == "a" * 40


# --- the per-event cap: output, diffs and messages are bounded, the cut marked ----------------

def test_an_event_of_5_mb_stdout_is_stored_capped_with_the_cut_marked(store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", 123)
    recorder = records.RunRecorder(run.id)
    huge = "".join(f"line {n:07d} of a very chatty task\n" for n in range(5 * 1024 * 1024 // 36 + 1))
    recorder.add_output(1, "PLAY [all]")
    recorder.add_output(2, huge)
    recorder.flush()
    stored = {row.seq: row.text for row in store.scalars(select(RunOutput).where(RunOutput.run_id == run.id))}
    assert stored[1] == "PLAY [all]"  # small output is kept as it came
    kept, marker = stored[2].rsplit("\n", 1)
    assert huge.startswith(kept) and len(kept.encode()) == records.OUTPUT_CAP_BYTES
    cut_mb = (len(huge.encode()) - records.OUTPUT_CAP_BYTES) / 1_000_000
    assert marker == f"\u2026 [fleet: {cut_mb:.1f} MB of output cut; the event's first 64 KiB kept]"
    assert len(stored[2].encode()) < records.OUTPUT_CAP_BYTES + 200


def test_a_diff_of_a_50_mb_file_is_cut_and_keeps_a_fingerprint_of_the_whole(store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", 123)
    recorder = records.RunRecorder(run.id)
    body = "+" + "x" * 99 + "\n"
    first = "--- before: /srv/big\n+++ after: /srv/big\n" + body * 500_000
    second = first[:-2] + "y\n"  # differs only far past the cut
    for seq, diff in ((1, first), (2, second)):
        recorder.add_task(TaskResult(seq=seq, host=f"web{seq}", task="big file", action="copy", status="changed",
                                     diff=diff, note="n" * 100_000))
    recorder.flush()
    rows = list(store.scalars(select(TaskResultRow).where(TaskResultRow.run_id == run.id).order_by(TaskResultRow.seq)))
    assert all(len(row.diff.encode()) < records.DIFF_CAP_BYTES + 300 for row in rows)
    assert all(row.diff.startswith("--- before: /srv/big\n+++ after: /srv/big\n+xxx") for row in rows)
    assert "MB of diff cut; the event's first 64 KiB kept; sha256 of the whole diff" in rows[0].diff
    assert rows[0].diff != rows[1].diff  # an approval of one cannot cover the other
    assert rows[0].note.endswith("of message cut; the event's first 16 KiB kept]")


@pytest.mark.parametrize("text,limit,expected", [
    pytest.param("", 4, "", id="nothing"),
    pytest.param("abcd", 4, "abcd", id="exactly the cap"),
    pytest.param("abcdef", 4, "abcd\n\u2026 [fleet: 2 bytes of output cut; the event's first 4 bytes kept]",
                 id="over the cap"),
    pytest.param("abc\u00e9", 4, "abc\n\u2026 [fleet: 2 bytes of output cut; the event's first 4 bytes kept]",
                 id="a character is never split"),
])
def test_cap_text(text, limit, expected):
    assert records.cap_text(text, limit, "output") == expected


@pytest.mark.parametrize("count,expected", [
    (512, "512 bytes"), (64 * 1024, "64 KiB"), (1536, "1.5 KiB"), (1_200_000, "1.2 MB"),
])
def test_size_text(count, expected):
    assert records.size_text(count) == expected
